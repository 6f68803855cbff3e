"""`lugha train`."""
from ._common import not_available

HELP = "Train adapters on a dataset (LowCLIP dual encoder)."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("train", "built in the training issue")
