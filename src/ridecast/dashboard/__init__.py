"""The dashboard: the live service, rollouts, batch results and drift, in a browser.

It reads only the core's records (the prediction log, the rollout state store, the batch results
table, the drift statistics) and imports no deployment mode; the web service mounts it at
``/dashboard`` and ``ridecast dashboard`` serves it on its own. Charts are uPlot, vendored under
``static/vendor/uplot`` with its licence and checksums.
"""
