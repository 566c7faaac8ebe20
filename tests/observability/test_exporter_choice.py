"""Which exporters the standard OTEL_* variables turn on, and that nothing is on without them."""

from __future__ import annotations

import pytest

from server.telemetry import Telemetry, TelemetryConfigError, metrics_host


def built(environ: dict[str, str]) -> Telemetry:
    telemetry = Telemetry.from_environment(environ=environ)
    telemetry.shutdown()
    return telemetry


def test_nothing_configured_means_no_providers_at_all():
    telemetry = built({})
    assert telemetry.tracer_provider is None
    assert telemetry.meter_provider is None


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
        {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        },
        {"OTEL_TRACES_EXPORTER": "console"},
        {"OTEL_TRACES_EXPORTER": "otlp,console"},
    ],
)
def test_an_endpoint_or_an_exporter_name_turns_tracing_on(environ):
    assert built(environ).tracer_provider is not None


def test_an_endpoint_with_exporters_named_none_exports_nothing():
    telemetry = built(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
        }
    )
    assert telemetry.tracer_provider is None
    assert telemetry.meter_provider is None


def test_the_sdk_switch_turns_everything_off():
    telemetry = built({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})
    assert telemetry.tracer_provider is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, "--metrics-port"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/json"),
    ],
)
def test_an_unknown_exporter_or_protocol_is_refused_by_name(environ, named):
    with pytest.raises(TelemetryConfigError, match=named):
        Telemetry.from_environment(environ=environ)


@pytest.mark.parametrize(
    ("address", "host"),
    [("127.0.0.1:50051", "127.0.0.1"), ("[::]:50051", "::"), ("0.0.0.0:1", "0.0.0.0")],
)
def test_the_metrics_endpoint_listens_on_the_api_host(address, host):
    assert metrics_host(address) == host
