"""The documents' promises name tests that exist.

README.md, docs/SECURITY.md and docs/RELIABILITY.md (and the other
documents) cite tests as `dir/test_file.py` or `dir/test_file.py::test_name`
under Code/Tests. Every citation must name a test module that exists and,
when it names a test, a test function defined in that module: a promise
whose test was renamed, moved or deleted is caught here.
"""

import os
import re

import pytest

from Tests.support import CODE_DIR

ROOT = os.path.dirname(CODE_DIR)
TESTS = os.path.join(CODE_DIR, "Tests")
DOCUMENTS = ["README.md"] + [os.path.join("docs", name) for name in
                             sorted(os.listdir(os.path.join(ROOT, "docs")))
                             if name.endswith(".md")]
CITATION = re.compile(r"(?<![\w/.])(?:Code/Tests/)?((?:[a-z]+/)*test_[a-z_0-9]+\.py)"
                      r"(?:::(test_\w+))?")
PROMISE_DOCUMENTS = ("README.md", "docs/SECURITY.md", "docs/RELIABILITY.md")


def citations(document):
    with open(os.path.join(ROOT, document), encoding="utf-8") as text:
        return CITATION.findall(text.read())


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_cited_test_exists(document):
    wrong = []
    for module, name in citations(document):
        path = os.path.join(TESTS, module)
        if not os.path.isfile(path):
            wrong.append(f"{module}: no such test module")
            continue
        with open(path, encoding="utf-8") as source:
            if name and not re.search(rf"^def {name}\(", source.read(), re.M):
                wrong.append(f"{module}::{name}: no such test")
    assert not wrong


@pytest.mark.parametrize("document", PROMISE_DOCUMENTS)
def test_the_promise_documents_cite_tests(document):
    assert citations(document)
