"""Facts about this host and process: installed packages, environment and code identity, GPUs, run owners and
heartbeats, library log routing, content hashes."""
