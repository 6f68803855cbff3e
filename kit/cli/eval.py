"""`lugha eval`."""
from ._common import not_available

HELP = "Evaluate a training run: recall@k and label accuracy per language."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("eval", "built in the training issue")
