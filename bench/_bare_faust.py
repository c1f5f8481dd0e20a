"""The baseline for bench/startup.py: a faust app with one agent that forwards raw bytes."""

import os

import faust

app = faust.App(
    os.environ["BARE_APP_ID"], broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP_SERVERS']}", store="memory://",
    broker_session_timeout=float(os.environ.get("FOREWARN_SESSION_TIMEOUT", "10")), web_enabled=False,
    consumer_auto_offset_reset="earliest",
)
source = app.topic("bare-in", key_serializer="raw", value_serializer="raw")
sink = app.topic("bare-out", key_serializer="raw", value_serializer="raw")


@app.agent(source, concurrency=1)
async def forward(stream):
    async for value in stream:
        await sink.send(value=value)
