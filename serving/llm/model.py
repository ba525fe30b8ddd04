"""KServe models: one :class:`LLMModel` per catalog entry, serving the V1 ``:predict`` and V2 ``/infer`` protocols.

V1 ``POST /v1/models/{name}:predict``::

    {"instances": [{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32},
                   {"prompt": "Once upon a time", "max_tokens": 16},
                   "What is the capital of France?"]}
    -> {"predictions": [{"text": "...", "finish_reason": "stop", "usage": {...}}, ...]}

An instance is a chat (``messages``), a raw completion (``prompt``), or a bare string (one user message); the other
keys are the OpenAI sampling fields (max_tokens, temperature, top_p, stop, seed).

V2 ``POST /v2/models/{name}/infer``: a BYTES input ``text_input`` of shape [N] (each element one user message,
formatted with the chat template, or a raw prompt when the request parameter ``raw_prompt`` is true); sampling
fields go in the request ``parameters``. Outputs: ``text_output`` (BYTES), ``finish_reason`` (BYTES) and
``completion_tokens`` (INT32), each of shape [N].

Instances run one after another through the same queue as the OpenAI routes.
"""

from __future__ import annotations

import time
from typing import Any

import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving.llm import telemetry
from serving.llm.errors import InvalidRequest, LLMError
from serving.llm.protocol import GenerationRequest, parse_chat_request, parse_completion_request
from serving.llm.service import LLMService

_V2_PARAMETERS = ("max_tokens", "temperature", "top_p", "stop", "seed")


class LLMModel(kserve.Model):
    """The KServe face of one catalog model; generation is delegated to the shared :class:`LLMService`."""

    def __init__(self, name: str, service: LLMService):
        super().__init__(name)
        self.service = service
        # A model that is not preloaded can serve at once (it loads on first use); a preloaded one is ready
        # when the preload has loaded it.
        self.ready = name not in service.preload

    def load(self) -> bool:
        """Load the GGUF now (sha256-verified), blocking; KServe calls this for a model that is not ready."""
        self.service.load_blocking(self.name)
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        return self.ready

    async def predict(
        self, payload: dict | InferRequest, headers: dict[str, str] | None = None
    ) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        return await self._predict_v1(payload)

    async def _predict_v1(self, payload: Any) -> dict:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidRequest(
                'the V1 body must be {"instances": [...]} with at least one instance', param="instances"
            )
        requests = [self._v1_instance(i, instance) for i, instance in enumerate(instances)]
        predictions = []
        for req in requests:
            text, generation = await self._generate(req, "v1")
            predictions.append(
                {
                    "text": text,
                    "finish_reason": generation.outcome.finish_reason if generation.outcome else "stop",
                    "usage": {
                        "prompt_tokens": generation.prompt_tokens,
                        "completion_tokens": generation.outcome.completion_tokens if generation.outcome else 0,
                    },
                }
            )
        return {"predictions": predictions}

    def _v1_instance(self, index: int, instance: Any) -> GenerationRequest:
        if isinstance(instance, str):
            instance = {"messages": [{"role": "user", "content": instance}]}
        if not isinstance(instance, dict):
            raise InvalidRequest(f"instances[{index}] must be a string or an object", param=f"instances[{index}]")
        if instance.get("stream"):
            raise InvalidRequest("streaming is only available on the OpenAI routes", param=f"instances[{index}].stream")
        body = {**instance, "model": self.name}
        cap = self.service.settings.max_tokens_cap
        try:
            if "messages" in instance:
                return parse_chat_request(body, max_tokens_cap=cap)
            if "prompt" in instance:
                return parse_completion_request(body, max_tokens_cap=cap)
        except InvalidRequest as exc:
            exc.param = f"instances[{index}].{exc.param}" if exc.param else f"instances[{index}]"
            raise
        raise InvalidRequest(f"instances[{index}] needs 'messages' or 'prompt'", param=f"instances[{index}]")

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        texts = _v2_texts(request)
        params = dict(request.parameters or {})
        raw = params.pop("raw_prompt", False)
        if not isinstance(raw, bool):
            raise InvalidRequest("parameters.raw_prompt must be a boolean", param="parameters.raw_prompt")
        unknown = sorted(set(params) - set(_V2_PARAMETERS))
        if unknown:
            raise InvalidRequest(
                f"unsupported parameters: {', '.join(unknown)} (supported: {', '.join(_V2_PARAMETERS)}, raw_prompt)",
                param=f"parameters.{unknown[0]}",
            )
        cap = self.service.settings.max_tokens_cap
        requests = []
        for text in texts:
            body = {**params, "model": self.name}
            try:
                if raw:
                    requests.append(parse_completion_request({**body, "prompt": text}, max_tokens_cap=cap))
                else:
                    requests.append(
                        parse_chat_request(
                            {**body, "messages": [{"role": "user", "content": text}]}, max_tokens_cap=cap
                        )
                    )
            except InvalidRequest as exc:
                exc.param = f"parameters.{exc.param}" if exc.param in _V2_PARAMETERS else exc.param
                raise
        outputs, reasons, counts = [], [], []
        for req in requests:
            text, generation = await self._generate(req, "v2")
            outputs.append(text)
            reasons.append(generation.outcome.finish_reason if generation.outcome else "stop")
            counts.append(generation.outcome.completion_tokens if generation.outcome else 0)
        n = len(outputs)
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            infer_outputs=[
                InferOutput("text_output", [n], "BYTES", outputs),
                InferOutput("finish_reason", [n], "BYTES", reasons),
                InferOutput("completion_tokens", [n], "INT32", counts),
            ],
        )

    async def _generate(self, req: GenerationRequest, endpoint: str) -> tuple[str, Any]:
        try:
            generation = await self.service.start(req, arrived=time.monotonic())
            text = await generation.text()
        except LLMError as exc:
            telemetry.REQUESTS.labels(endpoint, self.name, str(exc.status)).inc()
            raise
        telemetry.REQUESTS.labels(endpoint, self.name, "200").inc()
        return text, generation


def _v2_texts(request: InferRequest) -> list[str]:
    inputs = [i for i in request.inputs if i.name == "text_input"]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in request.inputs) or "none"
        raise InvalidRequest(
            f"the V2 request needs exactly one input named 'text_input' (got: {names})", param="inputs"
        )
    tensor = inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidRequest(f"text_input must be BYTES, got {tensor.datatype}", param="inputs.text_input.datatype")
    flat: list[Any] = []
    stack = [tensor.data] if not isinstance(tensor.data, list) else list(tensor.data)
    for item in stack:
        flat.extend(item if isinstance(item, list) else [item])
    texts = []
    for item in flat:
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        if not isinstance(item, str) or not item:
            raise InvalidRequest("text_input elements must be non-empty strings", param="inputs.text_input.data")
        texts.append(item)
    if not texts:
        raise InvalidRequest("text_input is empty", param="inputs.text_input.data")
    return texts
