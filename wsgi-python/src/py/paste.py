"""wsgi_python.paste: PasteDeploy loading as `pserve` does it.

Embedded in wsgi-python (src/paste.rs); not a public module.
"""
import configparser
import logging.config
import os
import sys


def missing_paste():
    """None when paste.deploy imports, else sys.prefix (where it is missing)."""
    try:
        import paste.deploy  # noqa: F401
    except ImportError:
        return sys.prefix
    return None


def load_app(uri, name, global_conf):
    from paste.deploy import loadapp

    return loadapp(uri, name=name, relative_to=os.getcwd(), global_conf=global_conf or None)


def read_server(path, name, global_conf):
    """[server:NAME] as ConfigLoader.get_context reads it, without loading
    the server: ("ok", section, [(name, value, key in the file)]) or
    ("missing", [server sections])."""
    from paste.deploy.loadwsgi import SERVER, ConfigLoader

    loader = ConfigLoader(path)
    if global_conf:
        loader.update_defaults(global_conf, overwrite=False)
    parser = loader.parser
    try:
        section = loader.find_config_section(SERVER, name=name)
    except LookupError:
        servers = [s for s in parser.sections() if s == "server" or s.startswith("server:")]
        return ("missing", servers)
    defaults = parser.defaults()
    merged = dict(defaults)
    merged.update(global_conf)
    local = []
    gets = []
    for option in parser.options(section):
        if option.startswith("set "):
            merged[option[4:].strip()] = parser.get(section, option)
        elif option.startswith("get "):
            gets.append((option[4:].strip(), parser.get(section, option), option))
        elif option in defaults:
            continue  # a [DEFAULT] key, not a local setting
        else:
            local.append((option, parser.get(section, option), option))
    for local_name, global_name, option in gets:
        if global_name not in merged:
            raise KeyError(
                f"[{section}] {option} = {global_name}: there is no global setting {global_name!r}"
            )
        local = [entry for entry in local if entry[0] != local_name]
        local.append((local_name, merged[global_name], option))
    return ("ok", section, local)


def setup_logging(path):
    """pserve's setup_logging (plaster_pastedeploy): fileConfig when the
    file has [loggers]."""
    parser = configparser.ConfigParser()
    with open(path, encoding="utf-8") as file:
        parser.read_file(file, path)
    if "loggers" not in parser.sections():
        return False
    path = os.path.abspath(path)
    logging.config.fileConfig(
        path,
        {"__file__": path, "here": os.path.dirname(path)},
        disable_existing_loggers=False,
    )
    return True
