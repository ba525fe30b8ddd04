"""The chat's one settings object: where the predictors are, how long to wait, how to log in.

Every field can be set from the environment with the ``RAGTUNE_CHAT_`` prefix (``RAGTUNE_CHAT_RETRIEVER_URL``,
``RAGTUNE_CHAT_LLM_API_KEY``, ...). Values are validated once, when the app
starts; a bad value stops the app with a message naming the field. Secrets are :class:`~pydantic.SecretStr`, so they
never appear in ``repr`` or logs, and nothing here is ever sent to the browser.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

FRONTEND_DIR = Path(__file__).resolve().parent
DEFAULT_PROMPT_FILE = FRONTEND_DIR / "rag_prompt.yaml"


class SettingsError(ValueError):
    """The chat settings are invalid; the message names the field."""


class StarterSpec(BaseModel):
    """One example prompt shown on an empty chat."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(..., min_length=1, max_length=80, description="Short text on the starter button.")
    message: str = Field(..., min_length=1, max_length=2000, description="The question sent when it is clicked.")


_DEFAULT_STARTERS = [
    StarterSpec(label="Create a virtual environment", message="How do I create and activate a virtual environment?"),
    StarterSpec(label="Handle exceptions", message="How do I handle an exception with try and except?"),
    StarterSpec(label="Tour the standard library", message="Which standard library module works with dates and times?"),
]


class ChatSettings(BaseSettings):
    """Settings of the Chainlit RAG chat (env prefix ``RAGTUNE_CHAT_``)."""

    model_config = SettingsConfigDict(
        env_prefix="RAGTUNE_CHAT_", extra="ignore", validate_default=True
    )

    # -- predictors ---------------------------------------------------------------------------------------------
    retriever_url: AnyHttpUrl = Field(
        "http://127.0.0.1:8081", description="Base URL of the retriever predictor (KServe V1 protocol)."
    )
    retriever_model: str = Field(
        "retriever", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Model name the retriever serves."
    )
    retriever_api_key: SecretStr | None = Field(
        None, description="Bearer token for the retriever, if it sits behind an authenticating gateway."
    )
    llm_url: AnyHttpUrl = Field(
        "http://127.0.0.1:8082", description="Base URL of the LLM predictor (serves /openai/v1/...)."
    )
    llm_api_key: SecretStr | None = Field(None, description="Bearer token for the LLM predictor, if it needs one.")
    default_model: str | None = Field(
        None, description="Model picked on a new chat; default: the first model the LLM predictor lists."
    )

    # -- time limits and retries --------------------------------------------------------------------------------
    connect_timeout_s: float = Field(3.0, gt=0, le=60, description="Seconds to wait for a TCP connection.")
    retriever_timeout_s: float = Field(20.0, gt=0, le=600, description="Seconds to wait for a retrieval answer.")
    llm_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Seconds to wait between two streamed chunks (and for the first one)."
    )
    busy_retries: int = Field(3, ge=0, le=10, description="Retries when the LLM answers 429 busy, then give up.")
    busy_max_wait_s: float = Field(
        10.0, gt=0, le=120, description="Longest wait between two busy retries, whatever Retry-After says."
    )

    # -- prompt and chat ----------------------------------------------------------------------------------------
    prompt_file: Path = Field(DEFAULT_PROMPT_FILE, description="The RAG prompt template (YAML).")
    max_top_k: int = Field(20, ge=1, le=100, description="Largest top_k a user may pick in the chat settings.")
    default_context_window: int = Field(
        2048, ge=256, le=131072, description="Context window assumed when the predictor does not report one."
    )
    starters: list[StarterSpec] = Field(
        default_factory=lambda: list(_DEFAULT_STARTERS),
        max_length=8,
        description="Example prompts on an empty chat; JSON list of {label, message} in the environment.",
    )

    # -- access -------------------------------------------------------------------------------------------------
    auth_username: str = Field("admin", min_length=1, max_length=64, description="User name for password login.")
    auth_password: SecretStr | None = Field(
        None, description="Set to require a password login; unset leaves the chat open (local demo)."
    )

    @field_validator("prompt_file")
    @classmethod
    def _prompt_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"prompt template {value} does not exist")
        return value

    @field_validator("auth_password")
    @classmethod
    def _strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 8:
            raise ValueError("auth_password must have at least 8 characters")
        return value

    @model_validator(mode="after")
    def _distinct_services(self) -> "ChatSettings":
        if str(self.retriever_url) == str(self.llm_url):
            raise ValueError("retriever_url and llm_url point at the same server")
        return self

    @property
    def auth_enabled(self) -> bool:
        return self.auth_password is not None

    def base_url(self, which: str) -> str:
        """``retriever`` or ``llm`` base URL without a trailing slash."""
        return str(self.retriever_url if which == "retriever" else self.llm_url).rstrip("/")


def describe_error(exc: ValidationError) -> str:
    """One line naming every bad field, with its environment variable."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(settings)"
        env = f"RAGTUNE_CHAT_{field.split('.')[0].upper()}" if err["loc"] else "RAGTUNE_CHAT_*"
        parts.append(f"{field} ({env}): {err['msg']}")
    return "; ".join(parts)


def load_settings(**overrides: object) -> ChatSettings:
    """Build and validate the settings from env and ``overrides``; raise :class:`SettingsError` naming bad fields."""
    try:
        return ChatSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(f"invalid chat settings: {describe_error(exc)}") from exc


@lru_cache(maxsize=1)
def get_settings() -> ChatSettings:
    """The process-wide settings, loaded once."""
    return load_settings()
