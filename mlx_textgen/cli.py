"""Command line: argv -> ServerConfig, and the ``serve``, ``createconfig``, ``cachedir`` commands.

Nothing here may import mlx or mlx_lm at module level: a BLAS library chosen by ``--blas`` has
to be loaded before MLX is, and ``mlx_textgen.server.run`` does that. Heavy imports stay inside
the command functions.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import Any

from mlx_textgen.config import (
    CACHE_DIR_ENV,
    DEFAULT_CONFIG_FILENAME,
    LOG_LEVELS,
    ConfigError,
    ModelConfig,
    ServerConfig,
    apply_overrides,
    check_config,
    load_config,
    resolve_cache_dir,
    save_cache_dir,
)
from mlx_textgen.config_template import write_default_config

PROG = "mlx_textgen"

_Flag = tuple[tuple[str, ...], dict[str, Any]]


def _flag(*flags: str, **options: Any) -> _Flag:
    return flags, options


def _dest(flag: _Flag) -> str:
    flags, options = flag
    return options.get("dest") or flags[-1].removeprefix("--").replace("-", "_")


# serve flags: (flags, argparse options). Each dest is a ServerConfig or ModelConfig key; the flags
# use default=SUPPRESS, so only flags the user gave reach the config (and override the file).
_MODEL_FLAGS: tuple[_Flag, ...] = (
    _flag(
        "--tokenizer-path",
        dest="tokenizer_repo_or_path",
        metavar="PATH",
        help="tokenizer folder or repo id, if not the model's own",
    ),
    _flag("--revision", help="branch, tag or commit of a Hugging Face repo"),
    _flag("--model-name", help="name clients use (default: derived from the path)"),
    _flag(
        "--max-context-tokens",
        type=int,
        metavar="N",
        help="cap the context window (prompt + output) below the model's own",
    ),
)
_SERVER_FLAGS: tuple[_Flag, ...] = (
    _flag("--host", help="address to bind"),
    _flag("-p", "--port", type=int, help="port to listen on"),
    _flag(
        "--api-key",
        dest="api_keys",
        action="append",
        metavar="KEY",
        help="accepted API key; repeat for several (default: none, no auth)",
    ),
    _flag("--api-key-file", metavar="PATH",
          help="file of accepted API keys, one a line (keeps them out of the process list)"),
    _flag(
        "--admin-api-key",
        dest="admin_api_keys",
        action="append",
        metavar="KEY",
        help="key required for cache and model admin routes; repeat for several",
    ),
    _flag(
        "--allowed-origins",
        dest="allowed_origins",
        action="append",
        metavar="ORIGIN",
        help="browser origin allowed by CORS; repeat for several (default: CORS off)",
    ),
    _flag(
        "--allowed-media-path",
        dest="allowed_media_paths",
        action="append",
        metavar="DIR",
        help="directory local image files may be read from; repeat for several (default: none)",
    ),
    _flag("--max-running-requests", type=int, metavar="N", help="requests generated together"),
    _flag(
        "--max-queued-requests",
        type=int,
        metavar="N",
        help="requests allowed to wait; more are refused",
    ),
    _flag(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        help="time limit per request; 0 = none (default: none)",
    ),
    _flag("--cache-ram-gb", type=float, metavar="GB", help="prompt cache RAM budget (default: 2)"),
    _flag("--cache-disk-gb", type=float, metavar="GB", help="prompt cache disk budget (default: 20)"),
    _flag("--max-body-bytes", type=int, metavar="N", help="largest request body"),
    _flag("--log-level", choices=LOG_LEVELS, type=str.lower, help="logging detail"),
    _flag(
        "--use-reasoning-content",
        action=argparse.BooleanOptionalAction,
        help="put reasoning in reasoning_content, not content",
    ),
    # Remote images (vision/fetch.py)
    _flag(
        "--allow-private-media-urls",
        action=argparse.BooleanOptionalAction,
        help="fetch image URLs that resolve to loopback, link-local, private or other "
        "non-public addresses (default: refused, against server-side request forgery)",
    ),
    _flag(
        "--media-fetch-timeout",
        type=float,
        metavar="SECONDS",
        help="time limit for fetching one image URL, redirects included",
    ),
    _flag("--media-max-bytes", type=int, metavar="N", help="largest image an image URL may return"),
    _flag(
        "--media-cache-bytes",
        type=int,
        metavar="N",
        help="downloaded images kept in memory by URL; 0 = none",
    ),
)
_ENGINE_FLAGS: tuple[_Flag, ...] = (
    _flag("--min-tokens", type=int, metavar="N", help="shortest prompt worth caching"),
    _flag(
        "--max-reprocess-tokens",
        type=int,
        metavar="N",
        help="most tokens re-processed instead of keeping a near-duplicate cache",
    ),
    _flag(
        "--replace-threshold",
        type=float,
        metavar="FRACTION",
        help="shared-prefix fraction at which a new cache replaces an old one",
    ),
    _flag("--max-capacity", type=int, metavar="N", help="most caches kept per model"),
    _flag(
        "--cache-dir",
        metavar="DIR",
        help=f"cache directory (default: ${CACHE_DIR_ENV}, the one saved "
        "with `mlx_textgen cachedir --set`, or ~/.cache/mlx_textgen)",
    ),
    _flag(
        "--cpu-weights",
        choices=("float", "native"),
        help="on a CPU device: dequantize weights to float (fast with a "
        "real BLAS) or keep them quantized",
    ),
    _flag("--blas", metavar="auto|off|PATH", help="BLAS library to load before MLX"),
    _flag(
        "--max-loaded-models",
        type=int,
        metavar="N",
        help="models resident at once, one engine process each; the least recently used "
        "idle one is unloaded to make room",
    ),
    _flag(
        "--max-model-memory-gb",
        type=float,
        metavar="GB",
        help="budget for the resident models' weights plus KV headroom (default: none)",
    ),
    _flag(
        "--kv-headroom-tokens",
        type=int,
        metavar="N",
        help="KV cache each resident model is assumed to need, in tokens",
    ),
    _flag(
        "--model-wait-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a request waits for room for its model before a 503",
    ),
)
_OVERRIDE_KEYS = tuple(_dest(flag) for flag in (*_MODEL_FLAGS, *_SERVER_FLAGS, *_ENGINE_FLAGS))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code (2 for usage and config errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and argparse usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except (ConfigError, FileExistsError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="OpenAI-compatible LLM server for MLX models."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(commands)
    _add_createconfig(commands)
    _add_cachedir(commands)
    _add_cache(commands)
    return parser


# ---------------------------------------------------------------------------- serve


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="start the OpenAI-compatible API server",
        description="Start the server. Flags override the values of --config-file. With neither "
        "--model-path nor --config-file, the bundled default model is served.",
        argument_default=argparse.SUPPRESS,
    )
    serve.set_defaults(handler=_run_serve)
    models = serve.add_argument_group("models")
    models.add_argument(
        "-m", "--model-path", dest="model_paths", action="append", metavar="PATH",
        help="model folder, .gguf file or Hugging Face repo id; repeat to serve several "
        "(replaces the config file's models)",
    )  # fmt: skip
    _add_flags(models, _MODEL_FLAGS)
    models.add_argument(
        "-cf",
        "--config-file",
        metavar="FILE",
        help="YAML config file (see `mlx_textgen createconfig`)",
    )
    _add_flags(serve.add_argument_group("server"), _SERVER_FLAGS)
    _add_flags(serve.add_argument_group("cache and engine"), _ENGINE_FLAGS)


def _add_flags(group: Any, table: tuple[_Flag, ...]) -> None:
    defaults = {f.name: f.default for f in fields(ServerConfig)}
    for flags, options in table:
        default = defaults.get(_dest((flags, options)))
        help_text = options.get("help", "")
        if isinstance(default, (str, int, float)) and "(default:" not in help_text:
            shown = {True: "on", False: "off"}.get(default, default)
            options = {**options, "help": f"{help_text} (default: {shown})"}
        group.add_argument(*flags, **options)


def build_config(args: argparse.Namespace) -> ServerConfig:
    """Turn parsed ``serve`` arguments into a validated ServerConfig.

    The config file (if any) is the base; ``--model-path`` replaces its models; with neither,
    the bundled default model is used. Flags the user gave then override single keys.
    """
    config_file = getattr(args, "config_file", None)
    model_paths: list[str] = getattr(args, "model_paths", None) or []
    if config_file:
        config = load_config(config_file)
    else:
        config = ServerConfig(model_configs=[])
    if model_paths:
        config.model_configs = [ModelConfig(model_id_or_path=path) for path in model_paths]
    elif not config_file:
        config.model_configs = [ModelConfig(model_id_or_path=_default_model_path())]
    given = {key: getattr(args, key) for key in _OVERRIDE_KEYS if hasattr(args, key)}
    config = apply_overrides(config, **given)
    check_config(config, source="command line")
    return config


def _default_model_path() -> str:
    # Imported here: the models package may pull in heavy dependencies.
    from mlx_textgen.models.default import DefaultModelMissing, default_model_path

    try:
        return default_model_path()
    except DefaultModelMissing as exc:
        raise ConfigError(str(exc)) from None


def _run_serve(args: argparse.Namespace) -> int:
    config = build_config(args)
    from mlx_textgen.server import run  # loads BLAS, then MLX

    run(config)
    return 0


# ---------------------------------------------------------------------------- createconfig, cachedir


def _add_createconfig(commands: Any) -> None:
    create = commands.add_parser(
        "createconfig", help="write a config file template",
        description="Write a commented model_config.yaml to edit and pass to `serve --config-file`.",
    )  # fmt: skip
    create.set_defaults(handler=_run_createconfig)
    options = (
        _flag("-n", "--num-models", type=int, default=1, metavar="N",
              help="number of model entries (default: 1)"),
        _flag("-o", "--output", default=DEFAULT_CONFIG_FILENAME, metavar="PATH",
              help=f"file or folder to write (default: ./{DEFAULT_CONFIG_FILENAME})"),
        _flag("--force", action="store_true", help="overwrite an existing file"),
    )  # fmt: skip
    for flags, kwargs in options:
        create.add_argument(*flags, **kwargs)


def _run_createconfig(args: argparse.Namespace) -> int:
    try:
        path = write_default_config(args.output, num_models=args.num_models, force=args.force)
    except FileExistsError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"Wrote {path}. Edit it, then run: {PROG} serve --config-file {path}")
    return 0


def _add_cachedir(commands: Any) -> None:
    cachedir = commands.add_parser(
        "cachedir", help="show or set the cache directory",
        description="Print the cache directory in use. --set saves a default for this user; "
        f"${CACHE_DIR_ENV} and `serve --cache-dir` still take precedence over it.",
    )  # fmt: skip
    cachedir.set_defaults(handler=_run_cachedir)
    action = cachedir.add_mutually_exclusive_group()
    action.add_argument("--set", dest="set_dir", metavar="DIR", help="save DIR as the default")
    action.add_argument("--reset", action="store_true", help="forget the saved default")


def _run_cachedir(args: argparse.Namespace) -> int:
    changing = args.set_dir is not None or args.reset
    if args.set_dir is not None and not args.set_dir.strip():
        raise ConfigError("the cache directory must not be empty", key="--set")
    if changing:
        try:
            save_cache_dir(args.set_dir)  # None (with --reset) forgets the saved one
        except OSError as exc:
            raise ConfigError(f"cannot save the setting: {exc.strerror or exc}") from None
        if os.environ.get(CACHE_DIR_ENV):
            print(f"note: ${CACHE_DIR_ENV} is set and takes precedence", file=sys.stderr)
    print(resolve_cache_dir())
    return 0


def _add_cache(commands: Any) -> None:
    cache = commands.add_parser(
        "cache", help="list or clear the prompt cache on disk",
        description="The prompt cache's disk tier under the cache directory (a running server "
        "also answers GET/DELETE /v1/cache, which covers its RAM tier too).",
    )  # fmt: skip
    cache.set_defaults(handler=_run_cache)
    cache.add_argument("action", choices=("list", "clear"))
    cache.add_argument("--cache-dir", default=None, help="the cache directory (default: as serve)")
    cache.add_argument("--model", default=None, help="only this model's entries (served name)")


def _run_cache(args: argparse.Namespace) -> int:
    from mlx_textgen.cache.store import DiskStore

    store = DiskStore(resolve_cache_dir(args.cache_dir) / "prompt_cache", budget_bytes=0)
    records = store.scan()
    by_fp: dict[str, list[Any]] = {}
    for rec in records:
        by_fp.setdefault(rec.fingerprint, []).append(rec)
    chosen = [fp for fp in by_fp if args.model is None or fp.rsplit("-", 1)[0] == args.model]
    if args.action == "clear":
        removed = sum(store.delete_all(fp) for fp in chosen)
        print(f"removed {removed} segment files")
        return 0
    if not chosen:
        print("the prompt cache is empty")
    for fp in sorted(chosen):
        recs = by_fp[fp]
        entries = sum(1 for r in recs if r.is_boundary)
        tokens = sum(len(r.tokens) for r in recs if r.trimmable)
        print(f"{fp}: {entries} entries in {len(recs)} segments, {store.nbytes(fp) / 1e6:.1f} MB"
              + (f", {tokens} distinct tokens of KV" if tokens else ""))
    return 0
