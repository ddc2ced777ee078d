#@@ project=deploytool cwe=CWE-78 msg="run git without shell"
def checkout(repo_dir, ref):
    """Check out a ref in a repository."""
    subprocess.run(f"git -C {repo_dir} checkout {ref}", shell=True, check=True) #-
    subprocess.run(["git", "-C", repo_dir, "checkout", "--end-of-options", ref], check=True) #+

#@@ project=mediasvc cwe=CWE-78 msg="pass ffmpeg arguments as a list"
def transcode(src, dst, bitrate):
    """Transcode an uploaded video."""
    cmd = "ffmpeg -i %s -b:v %s %s" % (src, bitrate, dst) #-
    return subprocess.call(cmd, shell=True) #-
    cmd = ["ffmpeg", "-i", src, "-b:v", str(int(bitrate)), dst] #+
    return subprocess.call(cmd) #+

#@@ project=netsvc cwe=CWE-78 msg="ping via argument vector"
def ping(host):
    """Return True if the host answers one ping."""
    return os.system("ping -c 1 " + host) == 0 #-
    return subprocess.run(["ping", "-c", "1", "--", host], capture_output=True).returncode == 0 #+

#@@ project=backupsvc cwe=CWE-78 msg="quote nothing: no shell for tar"
def archive(directory, dest):
    """Create a tar.gz archive of a directory."""
    subprocess.check_call("tar czf %s %s" % (dest, directory), shell=True) #-
    subprocess.check_call(["tar", "czf", dest, "--", directory]) #+

#@@ project=printsvc cwe=CWE-78 msg="spawn lpr without os.popen"
def print_document(printer, path):
    """Send a document to a printer."""
    return os.popen("lpr -P %s %s" % (printer, path)).read() #-
    return subprocess.run(["lpr", "-P", printer, "--", path], capture_output=True, text=True).stdout #+

#@@ project=dnssvc cwe=CWE-78 msg="resolve with socket, not dig"
def lookup(name):
    """Return the IPv4 addresses of a host name."""
    out = subprocess.check_output("dig +short " + name, shell=True) #-
    return out.decode().split() #-
    infos = socket.getaddrinfo(name, None, socket.AF_INET) #+
    return sorted({info[4][0] for info in infos}) #+

#@@ project=gitsvc cwe=CWE-78 msg="clone with list arguments"
def clone_repo(url, dest):
    """Clone a repository into dest."""
    subprocess.run("git clone " + url + " " + dest, shell=True, check=True) #-
    subprocess.run(["git", "clone", "--", url, dest], check=True) #+

#@@ project=imgsvc cwe=CWE-78 msg="resize images with Pillow"
def make_thumbnail(path, size):
    """Write a thumbnail next to the image."""
    os.system(f"convert {path} -resize {size}x{size} {path}.thumb.png") #-
    with Image.open(path) as im: #+
        im.thumbnail((size, size)) #+
        im.save(path + ".thumb.png") #+
