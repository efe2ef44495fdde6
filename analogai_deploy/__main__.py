"""`python -m analogai_deploy ...` = the `analogai-deploy` command (torchrun: `torchrun ... -m analogai_deploy ...`)."""
from .cli.app import run

if __name__ == "__main__":
    run()
