#@@ project=jobqueue cwe=CWE-502 msg="decode jobs as JSON, not pickle"
def decode_job(payload):
    """Turn a queued payload into a job dict."""
    return pickle.loads(payload) #-
    return json.loads(payload.decode("utf-8")) #+

#@@ project=configsvc cwe=CWE-502 msg="use yaml.safe_load for config files"
def load_config(path):
    """Load the service configuration from a YAML file."""
    with open(path) as f:
        return yaml.load(f, Loader=yaml.Loader) #-
        return yaml.safe_load(f) #+

#@@ project=cachesvc cwe=CWE-502 msg="store cache values as JSON"
def cache_get(client, key):
    """Fetch and decode a cached value."""
    raw = client.get(key)
    if raw is None:
        return None
    return pickle.loads(raw) #-
    return json.loads(raw) #+

#@@ project=mlpipe cwe=CWE-502 msg="load model weights without pickle"
def load_weights(path):
    """Load saved model weights."""
    with open(path, "rb") as f: #-
        return pickle.load(f) #-
    return dict(numpy.load(path, allow_pickle=False)) #+

#@@ project=sessionsvc cwe=CWE-502 msg="sign and JSON-encode session cookies"
def read_session(cookie):
    """Decode the session stored in a cookie."""
    data = base64.b64decode(cookie)
    return pickle.loads(data) #-
    return SIGNER.loads(data.decode("ascii")) #+

#@@ project=deploytool cwe=CWE-502 msg="safe yaml in manifest parsing"
def parse_manifest(text):
    """Parse a deployment manifest."""
    manifest = yaml.load(text) #-
    manifest = yaml.safe_load(text) #+
    if not isinstance(manifest, dict):
        raise ValueError("manifest must be a mapping")
    return manifest

#@@ project=rpcsvc cwe=CWE-502 msg="use marshal-free message decoding"
def handle_message(sock):
    """Read one length-prefixed message from the socket."""
    size = int.from_bytes(sock.recv(4), "big")
    data = sock.recv(size)
    return pickle.loads(data) #-
    return json.loads(data.decode("utf-8")) #+

#@@ project=notebooksvc cwe=CWE-502 msg="shelve replaced by json store"
def load_notebook(path):
    """Load a notebook's cells from disk."""
    with shelve.open(path) as db: #-
        return db["cells"] #-
    with open(path, encoding="utf-8") as f: #+
        return json.load(f)["cells"] #+
