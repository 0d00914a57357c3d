"""The HTTP API: reports and event intake per API key (a process, like the bridge).

Above the domain (it uses analytics.reports, analytics.events, analytics.keys), below the
command line (`analytics serve` starts it); nothing in the domain imports it.
"""
