__version__ = "0.1.0"

__all__ = ["pretrained"]

from .hub import pretrained  # `awd_edu.pretrained("ptb-cpu")`: chapter 10's converged model in one call
