#@@ project=calcsvc cwe=CWE-95 msg="parse arithmetic with ast instead of eval"
def evaluate_expression(text):
    """Evaluate a user-supplied arithmetic expression."""
    return eval(text) #-
    tree = ast.parse(text, mode="eval") #+
    return _eval_node(tree.body) #+

#@@ project=configsvc cwe=CWE-95 msg="load settings values with literal_eval"
def parse_setting(raw_value):
    """Turn a settings string into a Python value."""
    try:
        return eval(raw_value) #-
        return ast.literal_eval(raw_value) #+
    except (ValueError, SyntaxError):
        return raw_value

#@@ project=reportgen cwe=CWE-95 msg="look up column functions by name"
def apply_column(row, column_expr):
    """Compute a derived column for a report row."""
    return eval(column_expr, {}, row) #-
    func = COLUMN_FUNCTIONS.get(column_expr) #+
    if func is None: #+
        raise KeyError(f"unknown column {column_expr!r}") #+
    return func(row) #+

#@@ project=chatbot cwe=CWE-95 msg="dispatch commands through a table"
def run_command(bot, message):
    """Run a chat command like '!roll 6'."""
    name, _, arg = message[1:].partition(" ")
    exec(f"bot.cmd_{name}({arg!r})") #-
    handler = COMMANDS.get(name) #+
    if handler is None: #+
        return bot.reply("unknown command") #+
    return handler(bot, arg) #+

#@@ project=jsonapi cwe=CWE-95 msg="decode JSON bodies with json.loads"
def parse_body(request):
    """Decode the JSON body of a request."""
    body = request.body.decode("utf-8")
    return eval(body) #-
    return json.loads(body) #+

#@@ project=templater cwe=CWE-95 msg="format templates without exec"
def render(template, context):
    """Render a template string with context values."""
    code = "result = f" + repr(template) #-
    scope = dict(context) #-
    exec(code, scope) #-
    return scope["result"] #-
    return string.Template(template).safe_substitute(context) #+

#@@ project=sensorsvc cwe=CWE-95 msg="threshold expressions via operator table"
def check_threshold(value, rule):
    """Check a reading against a rule such as '> 40'."""
    return eval(f"{value} {rule}") #-
    op, _, limit = rule.strip().partition(" ") #+
    return OPERATORS[op](value, float(limit)) #+

#@@ project=mlpipe cwe=CWE-95 msg="resolve loss functions by registry"
def get_loss(config):
    """Return the loss function named in the training config."""
    return eval(config["loss"]) #-
    return LOSSES[config["loss"]] #+
