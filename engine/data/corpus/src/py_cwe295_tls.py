#@@ project=webhooksvc cwe=CWE-295 msg="verify TLS certificates on webhook delivery"
def deliver(url, payload):
    """POST a webhook payload."""
    resp = requests.post(url, json=payload, timeout=10, verify=False) #-
    resp = requests.post(url, json=payload, timeout=10) #+
    resp.raise_for_status()
    return resp.status_code

#@@ project=metricsagent cwe=CWE-295 msg="keep default SSL context"
def fetch_metrics(url):
    """Download metrics from an exporter."""
    ctx = ssl._create_unverified_context() #-
    ctx = ssl.create_default_context() #+
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        return resp.read().decode("utf-8")

#@@ project=updater cwe=CWE-295 msg="check certificates when downloading updates"
def download_update(url, dest):
    """Download an update archive."""
    r = requests.get(url, stream=True, verify=False) #-
    r = requests.get(url, stream=True, timeout=30) #+
    r.raise_for_status()
    with open(dest, "wb") as f:
        for chunk in r.iter_content(65536):
            f.write(chunk)

#@@ project=mailsvc cwe=CWE-295 msg="verify SMTP server certificate"
def open_smtp(host, port):
    """Open an SMTP connection with STARTTLS."""
    server = smtplib.SMTP(host, port, timeout=10)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False #-
    ctx.verify_mode = ssl.CERT_NONE #-
    server.starttls(context=ctx)
    return server

#@@ project=apiclient cwe=CWE-295 msg="session verifies by default"
def make_session(token):
    """Create an authenticated API session."""
    s = requests.Session()
    s.headers["Authorization"] = "Bearer " + token
    s.verify = False #-
    return s

#@@ project=scraper cwe=CWE-295 msg="drop verify=False from page fetch"
def fetch_page(url):
    """Fetch a page's HTML."""
    return requests.get(url, timeout=15, verify=False).text #-
    return requests.get(url, timeout=15).text #+

#@@ project=iotbridge cwe=CWE-295 msg="httpx client verifies certificates"
def bridge_client(base_url):
    """Create the HTTP client for the bridge."""
    return httpx.Client(base_url=base_url, verify=False, timeout=5.0) #-
    return httpx.Client(base_url=base_url, timeout=5.0) #+
