"""`lugha bench`."""
from ._common import not_available

HELP = "Benchmark a bundle on this machine's backends."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("bench", "built in the runtimes issue")
