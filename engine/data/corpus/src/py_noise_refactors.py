#@@ project=reportgen cwe=NVD-CWE-noinfo msg="use f-strings in report header"
def report_header(title, date):
    """Build the first line of a report."""
    return "%s - %s" % (title, date) #-
    return f"{title} - {date}" #+

#@@ project=mlpipe cwe=NVD-CWE-noinfo msg="simplify batching loop"
def batches(items, size):
    """Split items into lists of at most size."""
    out = [] #-
    for i in range(0, len(items), size): #-
        out.append(items[i:i + size]) #-
    return out #-
    return [items[i:i + size] for i in range(0, len(items), size)] #+
