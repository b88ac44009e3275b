"""Regenerates the README's figure: runs the README's Flax NNX block in ``examples/figures``.

python -m examples.readme_figure
"""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "nnx" in b]
    out = ROOT / "examples" / "figures"
    out.mkdir(exist_ok=True)
    os.chdir(out)
    exec(compile(block, "README.md", "exec"), {})
    print(f"wrote {out / 'reliability_nnx.png'}")


if __name__ == "__main__":
    main()
