"""What counts as a secret-looking name (headers, NAME=VALUE arguments): kept apart from the
provider registry so that the CLI can mask its own command line without importing it."""

import re

SECRET_NAME = re.compile(r"auth|api[-_]?key|token|secret|cookie|password", re.IGNORECASE)
