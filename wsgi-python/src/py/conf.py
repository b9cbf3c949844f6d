"""wsgi_python.conf: runs a gunicorn config file or module, as gunicorn does.

Embedded in wsgi-python (src/conf.rs); not a public module.
"""
import ast
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback


def _targets(node, out):
    """Names bound by an assignment target (a, (a, b), [a, *b])."""
    if isinstance(node, ast.Name):
        out.append(node.id)
    elif isinstance(node, (ast.Tuple, ast.List)):
        for element in node.elts:
            _targets(element, out)
    elif isinstance(node, ast.Starred):
        _targets(node.value, out)


def _walk(body, lines):
    # Module level includes the bodies of if/try/with/for, not of def/class.
    for node in body:
        names = []
        if isinstance(node, ast.Assign):
            for target in node.targets:
                _targets(target, names)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            _targets(node.target, names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
            lines[node.name] = node.lineno
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.append(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            _targets(node.target, names)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    _targets(item.optional_vars, names)
        for name in names:
            lines[name] = node.lineno
        for field in ("body", "orelse", "finalbody"):
            sub = getattr(node, field, None)
            if isinstance(sub, list):
                _walk(sub, lines)
        for handler in getattr(node, "handlers", None) or ():
            if getattr(handler, "name", None):
                lines[handler.name] = handler.lineno
            _walk(handler.body, lines)
        for case in getattr(node, "cases", None) or ():
            _walk(case.body, lines)


def assignment_lines(source, filename):
    """{name: line of its last module-level assignment or definition}."""
    lines = {}
    try:
        _walk(ast.parse(source, filename).body, lines)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    return lines


def _error(error, filename):
    """(line, type name, one-line message, traceback text) of an exception
    raised while running `filename`: the line of the deepest frame in it."""
    line = None
    if filename is not None:
        for frame, lineno in traceback.walk_tb(error.__traceback__):
            if frame.f_code.co_filename == filename:
                line = lineno
    message = str(error).strip().replace("\n", " ")
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return line, type(error).__name__, message, text


def exec_file(path):
    """gunicorn's get_config_from_filename: ("ok", namespace, lines) or
    ("syntax", line, message, "") / ("error", line, type, message, traceback)."""
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError as error:
        return ("unreadable", error.strerror or str(error))
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as error:
        # Raised for this file: its line is the error's own.
        return ("syntax", error.lineno, type(error).__name__, error.msg or str(error))
    except (ValueError, RecursionError, MemoryError) as error:
        return ("syntax", None, type(error).__name__, str(error))
    name = "__config__"
    if os.path.splitext(path)[1] in (".py", ".pyc"):
        spec = importlib.util.spec_from_file_location(name, path)
    else:
        loader = importlib.machinery.SourceFileLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException as error:  # SystemExit too: a config must not stop us
        return ("error",) + _error(error, path)
    return ("ok", module.__dict__, assignment_lines(source, path))


def import_config(name):
    """gunicorn's get_config_from_module_name, for "python:NAME":
    ("ok", namespace, lines, file) or ("error", line, type, message, traceback, file)."""
    origin = None
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.has_location:
            origin = spec.origin
    except BaseException:
        pass
    try:
        module = importlib.import_module(name)
    except SyntaxError as error:
        if error.filename:
            origin = error.filename
        return ("error", error.lineno, type(error).__name__, error.msg or str(error), "", origin)
    except BaseException as error:
        return ("error",) + _error(error, origin) + (origin,)
    lines = {}
    filename = getattr(module, "__file__", None)
    if isinstance(filename, str) and filename.endswith(".py"):
        try:
            with open(filename, "rb") as file:
                lines = assignment_lines(file.read(), filename)
        except OSError:
            pass
    else:
        filename = None
    return ("ok", vars(module), lines, filename)
