"""The README's "Adding a variant" example is real code: it registers and passes conformance."""
import re
from pathlib import Path

from harness.registry import VARIANTS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_variant_example_passes_conformance():
    text = README.read_text()
    section = text.split("## Adding a variant")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    try:
        exec(compile(code, "README.md (Adding a variant)", "exec"), {"__name__": "readme_example"})
        from harness.model import conformance

        conformance.check_variant("my_mixer")
        assert VARIANTS.get("my_mixer").metadata()["display_name"] == "My mixer"
    finally:
        VARIANTS._items.pop("my_mixer", None)
