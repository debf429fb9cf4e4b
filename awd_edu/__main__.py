# Hand-written: the one file in awd_edu/ that nbdev_export does not make (chapter 11 makes cli.py).
# `python -m awd_edu ARGS` runs the command line, as `awd-edu ARGS` does; `python -m awd_edu.cli ARGS` too.
from awd_edu.cli import main
if __name__ == "__main__":
    raise SystemExit(main())
