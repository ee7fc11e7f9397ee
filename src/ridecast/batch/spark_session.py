"""The Spark session of the Spark engine, and the one-line answer when Spark cannot run here.

pyspark comes with the optional extra ``ridecast[spark]``; Spark itself needs Java 17 or newer.
Both are checked before anything is loaded, so a machine without them gets one line saying what
is missing and how to install it (exit status 2), not a Java gateway traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ridecast.errors import RidecastError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MIN_JAVA = 17
INSTALL = "pip install 'ridecast[spark]'"
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


class SparkUnavailable(RidecastError):
    """pyspark or Java is missing (or too old) on this machine."""


def find_java() -> str | None:
    """The ``java`` Spark will start: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if candidate.is_file() else None
    return shutil.which("java")


def java_major(java: str) -> int | None:
    try:
        shown = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(shown)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def require_spark() -> None:
    """Raise :class:`SparkUnavailable` saying what is missing, and how to install it."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailable(
            f"--engine spark needs pyspark, which is not installed: {INSTALL} "
            f"(Spark also needs Java {MIN_JAVA} or newer)"
        ) from None
    java = find_java()
    where = "in $JAVA_HOME/bin" if os.environ.get("JAVA_HOME") else "on PATH"
    if java is None:
        raise SparkUnavailable(
            f"--engine spark needs Java {MIN_JAVA} or newer, and there is no java {where}: "
            "install a JDK (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    major = java_major(java)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major is not None else "a java that does not say its version"
        raise SparkUnavailable(
            f"--engine spark needs Java {MIN_JAVA} or newer; {java} is {found}: install a "
            f"newer JDK or point JAVA_HOME at one"
        )


def start_session(master: str | None, app_name: str = "ridecast batch") -> SparkSession:
    """The active session if there is one (spark-submit, tests), else a new one on ``master``
    (default ``local[*]``; under spark-submit, the master it was given)."""
    require_spark()
    # The executors' Python is this interpreter unless the user chose one (a packed env).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # not started by spark-submit
        builder = builder.master("local[*]")
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        shown = master or "local[*]"
        raise SparkUnavailable(f"Spark did not start (master {shown}): {first}") from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


SESSION_CONF = {
    # Month boundaries and TLC's wall-clock times are compared as written, in no time zone.
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
    "spark.ui.showConsoleProgress": "false",  # ridecast draws its own progress bar
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
}
