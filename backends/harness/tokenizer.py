"""Token counting with a Hugging Face `tokenizer.json`, through the `tokenizers` library only
(transformers would pull in torch, which the harness never imports)."""
from __future__ import annotations

from pathlib import Path

from planner.errors import UsageError


class Tokenizer:
    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer as _HFTokenizer
        except ImportError:
            raise UsageError("counting tokens needs the `tokenizers` package: pip install tokenizers") from None
        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise UsageError(f"no tokenizer.json at {path}")
        self._tok = _HFTokenizer.from_file(str(file))

    def count(self, text: str) -> int:
        """Tokens in `text` without special tokens (metrics.md: add_special_tokens=False)."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)
