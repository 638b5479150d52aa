"""GPT-2 tokenization: text_input (UTF-8 bytes) -> input_ids, with `tokenizers` only."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer
from tritonyard_contract.params import ModelParams, param
from tritonyard_contract.tensors import INPUT_IDS, TEXT_INPUT

TOKENIZER_FILE = "tokenizer.json"
INPUT, OUTPUT = TEXT_INPUT.name, INPUT_IDS.name
DEFAULT_MAX_PROMPT_BYTES = 32 * 1024


@dataclass(frozen=True)
class Params(ModelParams):
    """The model's `parameters` from config.pbtxt, read once."""

    max_prompt_bytes: int = param(DEFAULT_MAX_PROMPT_BYTES, minimum=1)


class TritonPythonModel:
    """Each request is tokenized on its own; its ids come back as [1, n]."""

    def initialize(self, args: dict) -> None:
        self.params = Params.from_config(json.loads(args["model_config"]))
        self.tokenizer = Tokenizer.from_file(
            str(Path(args["model_repository"]) / args["model_version"] / TOKENIZER_FILE)
        )

    def execute(self, requests: list) -> list:
        return [self._tokenize(r) for r in requests]

    def _tokenize(self, request):
        values = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy().reshape(-1)
        try:
            if values.size != 1:
                raise ValueError(f"expected one text, got {values.size}")
            raw = bytes(values[0])
            # Before decoding: an oversized prompt is refused without touching its bytes.
            if len(raw) > self.params.max_prompt_bytes:
                raise ValueError(f"{len(raw)} bytes, above the limit of {self.params.max_prompt_bytes}")
            text = raw.decode("utf-8")
            if not text:
                raise ValueError("is empty")
        except (UnicodeDecodeError, ValueError) as exc:
            message = "is not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{INPUT}: {message}", pb_utils.TritonError.INVALID_ARG)
            )
        ids = np.array([self.tokenizer.encode(text).ids], np.int64)
        return pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT, ids)])

    def finalize(self) -> None:
        self.tokenizer = None
