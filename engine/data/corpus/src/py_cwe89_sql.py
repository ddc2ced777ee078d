#@@ project=shopdb cwe=CWE-89 msg="parameterize product search"
def find_products(conn, name):
    """Return products whose name matches."""
    cur = conn.cursor()
    cur.execute("SELECT id, name FROM products WHERE name LIKE '%" + name + "%'") #-
    cur.execute("SELECT id, name FROM products WHERE name LIKE ?", ("%" + name + "%",)) #+
    return cur.fetchall()

#@@ project=authsvc cwe=CWE-89 msg="bind username in login query"
def get_user(conn, username):
    """Fetch a user row by name."""
    query = "SELECT id, password_hash FROM users WHERE name = '%s'" % username #-
    return conn.execute(query).fetchone() #-
    query = "SELECT id, password_hash FROM users WHERE name = ?" #+
    return conn.execute(query, (username,)).fetchone() #+

#@@ project=blogdb cwe=CWE-89 msg="use placeholders for post deletion"
def delete_post(conn, post_id, author):
    """Delete a post owned by the author."""
    conn.execute(f"DELETE FROM posts WHERE id = {post_id} AND author = '{author}'") #-
    conn.execute("DELETE FROM posts WHERE id = ? AND author = ?", (post_id, author)) #+
    conn.commit()

#@@ project=analyticsdb cwe=CWE-89 msg="whitelist sort column"
def top_pages(conn, order_by, limit):
    """Return the most visited pages."""
    sql = "SELECT path, hits FROM pages ORDER BY %s DESC LIMIT %d" % (order_by, limit) #-
    if order_by not in ("hits", "path", "updated"): #+
        raise ValueError("bad sort column") #+
    sql = "SELECT path, hits FROM pages ORDER BY " + order_by + " DESC LIMIT ?" #+
    return conn.execute(sql, (int(limit),)).fetchall() #+
    return conn.execute(sql).fetchall() #-

#@@ project=crmdb cwe=CWE-89 msg="parameterized update of contact email"
def update_email(conn, contact_id, email):
    """Change a contact's email address."""
    cur = conn.cursor()
    cur.execute("UPDATE contacts SET email = '" + email + "' WHERE id = " + str(contact_id)) #-
    cur.execute("UPDATE contacts SET email = %s WHERE id = %s", (email, contact_id)) #+
    conn.commit()
    return cur.rowcount

#@@ project=inventorydb cwe=CWE-89 msg="bind list of ids"
def load_items(conn, ids):
    """Load items by id."""
    sql = "SELECT * FROM items WHERE id IN (%s)" % ",".join(str(i) for i in ids) #-
    return conn.execute(sql).fetchall() #-
    marks = ",".join("?" for _ in ids) #+
    return conn.execute(f"SELECT * FROM items WHERE id IN ({marks})", list(ids)).fetchall() #+

#@@ project=forumdb cwe=CWE-89 msg="count replies with bound thread id"
def reply_count(conn, thread):
    """Count replies in a thread."""
    row = conn.execute("SELECT COUNT(*) FROM replies WHERE thread = '%s'" % thread).fetchone() #-
    row = conn.execute("SELECT COUNT(*) FROM replies WHERE thread = ?", (thread,)).fetchone() #+
    return row[0]

#@@ project=hrdb cwe=CWE-89 msg="parameterize salary report filter"
def employees_in(conn, department):
    """List employees of a department."""
    return conn.execute("SELECT name FROM employees WHERE dept = \"" + department + "\"").fetchall() #-
    return conn.execute("SELECT name FROM employees WHERE dept = ?", (department,)).fetchall() #+
