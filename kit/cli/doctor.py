"""`lugha doctor`."""
from ._common import not_available

HELP = "Check this machine before a field trip."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("doctor", "built in the runtimes issue")
