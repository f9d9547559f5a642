"""The README's Python snippets marked `<!-- test: run -->` and the modules' docstring examples actually run."""

import doctest
import re

import pytest
from conftest import REPO_ROOT

import glotok_hf.configuration_glotok
import glotok_hf.discriminator
import glotok_hf.losses.histogram
import glotok_hf.losses.objective
import glotok_hf.modeling_glotok
import glotok_hf.prior
import glotok_hf.sampling
import glotok_hf.teacher

MARKED_BLOCK = re.compile(r"<!-- test: run -->\s*```python\n(.*?)```", re.DOTALL)


def readme_snippets() -> list[str]:
    return MARKED_BLOCK.findall((REPO_ROOT / "README.md").read_text())


def test_readme_has_runnable_snippets():
    assert len(readme_snippets()) >= 1


@pytest.mark.parametrize("index", range(len(readme_snippets())))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_snippets()[index], f"README.md snippet {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize(
    "module",
    [
        glotok_hf.configuration_glotok,
        glotok_hf.discriminator,
        glotok_hf.losses.histogram,
        glotok_hf.losses.objective,
        glotok_hf.modeling_glotok,
        glotok_hf.prior,
        glotok_hf.sampling,
        glotok_hf.teacher,
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
