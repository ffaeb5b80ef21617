"""schemathesis over /api/schema/: generated requests, valid and invalid, against a real daphne.

Every operation of the schema gets a bounded number of examples of each kind (a few minutes at most on
two cores). The checks: no server error (5xx) for any input; every answer's status is one the schema
documents (chatdesk/schema.py adds the 400/401/404/413/415/503 answers), and its content type and body
match it. (schemathesis's pytest plugin does not run under pytest 9; the operations are driven here.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.chats.conftest import worker_env
from tests.support.processes import Daphne, running_daphne

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Daphne]:
    with running_daphne(tmp_path, env=worker_env()) as daphne:
        yield daphne


def exercise(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> list[str]:
    """Run ``operation`` on generated cases of ``mode``; return the failures found (none is the goal)."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        try:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label} [{mode}]: {str(exc)[:1500]}")

    run()
    return failures


def test_the_api_answers_every_generated_request_as_documented(served: Daphne, api_token: str) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/api/schema/?format=json")
    headers = {"Authorization": f"Bearer {api_token}"}
    failures: list[str] = []
    operations = [cast(Any, result).ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += exercise(operation, mode, headers)
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(dict.fromkeys(failures))
    assert "Traceback" not in served.output()
