"""--config FILE and --print-config, added to every command by cli.py: option values from a
YAML file, checked as the command line's are.

The file's values become the command's defaults (click's default_map), so an option given on
the command line overrides its key. Every value goes through the option's own click type
(ranges, choices, paths) after a strict check of its YAML type, so `epochs: 2.5` or
`pretrained: "yes"` is refused instead of being read as 2 or True.
"""
import re

import click

from .errors import PctError
from .options import option_name

CONFIG_HELP = ("Read option values from this YAML file: keys are option names (kd-alpha or "
               "kd_alpha), values as on the command line (lists for repeatable and two-number "
               "options); options given on the command line override the file. See "
               "recipes/ and docs/training.md.")
NOT_IN_FILES = ("help", "config", "print-config", "version")


def with_config(command):
    """`command` with --config FILE and --print-config added (once: commands are module-level
    objects, and the group may be asked for one several times)."""
    if any(param.name == "config" for param in command.params):
        return command
    command.params.append(click.Option(
        ["--config"], type=click.Path(dir_okay=False), is_eager=True, expose_value=True,
        callback=_load_config, metavar="FILE", help=CONFIG_HELP))
    command.params.append(click.Option(
        ["--print-config"], is_flag=True, help="Print the options as resolved from --config "
        "and the command line (a YAML file --config reads) and stop, without running."))
    run = command.callback

    def callback(config=None, print_config=False, **options):
        if print_config:
            click.echo(resolved_config(click.get_current_context(), options), nl=False)
            return None
        return run(**options)

    command.callback = callback
    return command


def option_key(param):
    """The key of `param` in a config file: its first long option name, without dashes."""
    return next(o for o in param.opts if o.startswith("--"))[2:]


def _keys_of(command):
    """{accepted key: param} of the options a config file may set: every long name of every
    option (dashes; underscores are read as dashes)."""
    keys = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in param.opts:
                if name.startswith("--") and name[2:] not in NOT_IN_FILES:
                    keys[name[2:]] = param
    return keys


def _load_config(ctx, param, path):
    """--config's callback: read `path` and make its values the command's defaults."""
    if path is None:
        return None
    keys, defaults, seen = _keys_of(ctx.command), {}, {}
    for key, value in read_config(path).items():
        name = option_name(str(key))
        if name not in keys:
            raise PctError(f"--config {path}: unknown key {key!r}, not an option of pct "
                           f"{ctx.command.name}{_closest(name, keys)}")
        option = keys[name]
        if option.name in seen:
            raise PctError(f"--config {path}: keys {seen[option.name]!r} and {key!r} both set "
                           f"--{option_key(option)}")
        seen[option.name] = key
        if value is not None:  # null: the option's default
            defaults[option.name] = checked_value(ctx, option, value,
                                                     f"--config {path}, key {key}")
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


def _closest(name, keys):
    import difflib

    close = difflib.get_close_matches(name, list(keys), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_config(path):
    """The mapping a YAML config file holds; PctError (one line) for a missing or unreadable
    file, bad YAML, or anything but a mapping."""
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML 1.2 numbers: 1e-4 is a float (PyYAML's YAML 1.1 reads it as a string)."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[0-9][0-9_]*[eE][-+]?[0-9]+|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)$"),
        list("-+0123456789."))
    try:
        with open(path) as f:
            values = yaml.load(f, Loader=Loader)
    except OSError as exc:
        raise PctError(f"cannot read --config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PctError(f"--config {path} is not valid YAML{where}: "
                       f"{getattr(exc, 'problem', None) or exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise PctError(f"--config {path} must hold a mapping of option names to values, not "
                       f"a {type(values).__name__}")
    return values


def checked_value(ctx, option, value, where):
    """`value` of `option` from a config file, checked: its YAML type first (a list for
    repeatable and multi-number options, a bool for flags, an int for integer options, a
    number for float options, a string otherwise), then the option's click type. PctError
    naming `where` (the file and key) otherwise."""
    if option.multiple or option.nargs != 1:
        count = None if option.multiple else option.nargs
        if not isinstance(value, list) or (count is not None and len(value) != count):
            shape = "a list" if count is None else f"a list of {count} values"
            raise PctError(f"{where}: expected {shape}, got {value!r}")
        kinds = option.type.types if isinstance(option.type, click.Tuple) else \
            [option.type] * len(value)
        for item, kind in zip(value, kinds):
            _check_kind(option, kind, item, where)
    else:
        _check_kind(option, option.type, value, where)
    try:
        option.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        raise PctError(f"{where}: {exc.message}") from None
    return tuple(value) if isinstance(value, list) else value


def _check_kind(option, kind, value, where):
    """PctError unless the YAML value `value` has the Python type `kind` (a click type) reads."""
    if option.is_flag or isinstance(kind, click.types.BoolParamType):
        wanted, ok = "true or false", isinstance(value, bool)
    elif isinstance(kind, click.types.IntParamType):
        wanted, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(kind, click.types.FloatParamType):
        wanted = "a number"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        wanted, ok = "a string", isinstance(value, str)
    if not ok:
        raise PctError(f"{where}: expected {wanted}, got {value!r}")


def resolved_config(ctx, options):
    """YAML of every visible option of `ctx.command` with its value in `options` (the
    command's keyword arguments, after --config and the command line): what --print-config
    shows and --config reads back."""
    import yaml

    out = {}
    for param in ctx.command.params:
        if isinstance(param, click.Option) and not param.hidden and param.name in options:
            out[option_key(param)] = _plain(options[param.name])
    head = f"# pct {ctx.command.name}: options from --config and the command line\n"
    return head + yaml.safe_dump(out, sort_keys=False, default_flow_style=None)


def _plain(value):
    """`value` as YAML scalars and lists (a tuple is a list; another object its str)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
