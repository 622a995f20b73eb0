"""``python -m facecmp``: the ``facecmp`` command (what torchrun starts: ``torchrun ... -m facecmp finetune ...``)."""

from facecmp.cli import run

if __name__ == "__main__":
    run()
