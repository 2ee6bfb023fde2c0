"""CloudStack API errors: the codes, the cserrorcodes and the texts the Java server uses."""

from __future__ import annotations

#: errorcode -> cserrorcode, as CloudStack pairs them (ApiErrorCode / CSExceptionErrorCode).
CS_ERROR_CODES: dict[int, int] = {
    401: 9999,
    429: 9999,
    430: 9999,
    431: 4350,
    432: 9999,
    530: 4250,
    531: 4365,
    532: 4280,
    533: 4325,
    534: 4380,
    535: 4370,
    536: 4250,
    537: 4360,
}

AUTH_TEXT = "unable to verify user credentials and/or request signature"


class ApiError(Exception):
    """An error CloudStack reports: HTTP status (errorcode), cserrorcode and text."""

    def __init__(self, code: int, text: str, cserrorcode: int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.cserrorcode = cserrorcode if cserrorcode is not None else CS_ERROR_CODES.get(code, 9999)

    def body(self) -> dict[str, object]:
        return {
            "uuidList": [],
            "errorcode": self.code,
            "cserrorcode": self.cserrorcode,
            "errortext": self.text,
        }


def param_error(text: str) -> ApiError:
    """A bare parameter error (431, cserrorcode 9999), e.g. a missing parameter."""
    return ApiError(431, text, 9999)


def invalid_value(text: str) -> ApiError:
    """An invalid parameter value (431, cserrorcode 4350: InvalidParameterValueException)."""
    return ApiError(431, text, 4350)


def missing_param(command: str, name: str) -> ApiError:
    return param_error(
        f"Unable to execute API command {command.lower()} due to missing parameter {name}"
    )


def unknown_id(command: str, name: str, value: str) -> ApiError:
    return ApiError(
        431,
        f"Unable to execute API command {command.lower()} due to invalid value. Invalid parameter "
        f"{name} value={value} due to incorrect long value format, or entity does not exist or "
        "due to incorrect parameter annotation for the field in api cmd class.",
        9999,
    )


def in_use(text: str) -> ApiError:
    return ApiError(536, text)


def rule_conflict(text: str) -> ApiError:
    return ApiError(537, text)


def internal(text: str) -> ApiError:
    return ApiError(530, text)
