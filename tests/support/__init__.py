"""What the tests share: servers on loopback, fixtures and helpers; never a test itself.

conftest.py registers the fixtures every test gets; a test module imports the helpers it uses
from here (``from support.pipeline_kit import run``): pytest puts ``tests/`` on ``sys.path``
because conftest.py lives there. No test module imports another test module.
"""

from pathlib import Path

# The repository root: commands run from it as the README runs them (pyproject's [tool.dg]).
PROJECT = Path(__file__).resolve().parents[2]
