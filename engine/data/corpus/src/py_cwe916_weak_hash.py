#@@ project=authsvc cwe=CWE-916 msg="hash passwords with scrypt"
def hash_password(password):
    """Hash a password for storage."""
    return hashlib.md5(password.encode()).hexdigest() #-
    salt = os.urandom(16) #+
    key = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1) #+
    return salt.hex() + "$" + key.hex() #+

#@@ project=usersvc cwe=CWE-916 msg="verify with pbkdf2 and constant-time compare"
def check_password(stored, password):
    """Check a password against its stored hash."""
    return stored == hashlib.sha1(password.encode()).hexdigest() #-
    salt_hex, key_hex = stored.split("$") #+
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt_hex), 600000) #+
    return hmac.compare_digest(key.hex(), key_hex) #+

#@@ project=apisvc cwe=CWE-916 msg="store api key digests with sha256 hmac"
def key_digest(api_key):
    """Digest an API key before storing it."""
    return hashlib.md5(api_key.encode()).hexdigest() #-
    return hmac.new(SERVER_PEPPER, api_key.encode(), hashlib.sha256).hexdigest() #+

#@@ project=forumsvc cwe=CWE-916 msg="bcrypt for forum passwords"
def set_password(user, password):
    """Set a user's password."""
    user.password_hash = hashlib.md5(password.encode("utf-8")).hexdigest() #-
    user.password_hash = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()) #+
    user.save()

#@@ project=wifimgr cwe=CWE-916 msg="derive stored secret with pbkdf2"
def store_psk(db, ssid, passphrase):
    """Store the passphrase of a network."""
    db[ssid] = hashlib.sha1(passphrase.encode()).hexdigest() #-
    salt = os.urandom(16) #+
    db[ssid] = salt.hex() + ":" + hashlib.pbkdf2_hmac("sha256", passphrase.encode(), salt, 310000).hex() #+

#@@ project=tokensvc cwe=CWE-916 msg="reset tokens hashed with sha256"
def token_hash(token):
    """Hash a reset token for lookup."""
    h = hashlib.md5() #-
    h = hashlib.sha256() #+
    h.update(token.encode())
    return h.hexdigest()

#@@ project=ldapsync cwe=CWE-916 msg="salted password digests"
def make_userpassword(password):
    """Build an LDAP userPassword value."""
    digest = hashlib.md5(password.encode()).digest() #-
    return "{MD5}" + base64.b64encode(digest).decode() #-
    salt = os.urandom(8) #+
    digest = hashlib.sha512(password.encode() + salt).digest() #+
    return "{SSHA512}" + base64.b64encode(digest + salt).decode() #+
