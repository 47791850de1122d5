"""Where ``{{secrets.NAME}}`` comes from on a stack, built from the settings: the encrypted
store and its key, the secrets file, the environment (see ``eventray.pipeline.secrets``).

The key is read here, in the process that uses it (a lane, the API actor, the CLI): from
``secrets.key`` or from ``secrets.key_file`` (which must be owner-only, like the secrets file).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import SecretStr

from eventray.config.settings import SecretsSettings, Settings
from eventray.pipeline.errors import PermanentError, SettingsError
from eventray.pipeline.secret_crypto import SecretCipher, parse_key
from eventray.pipeline.secret_store import SecretStore, StoredSecrets
from eventray.pipeline.secrets import EnvSecrets, LayeredSecrets, TableSource

__all__ = ["check_secrets", "layered_secrets", "load_cipher", "secret_store"]


def _key(inline: SecretStr | None, path: Path | None, setting: str) -> bytes | None:
    if inline is not None:
        try:
            return parse_key(inline.get_secret_value(), f"EVENTRAY_SECRETS__{setting.upper()}")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    if path is None:
        return None
    variable = f"EVENTRAY_SECRETS__{setting.upper()}_FILE"
    try:
        info = os.stat(path)
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SettingsError(
                f"{variable}: {path}: other users may access it (mode {mode:04o}); run: "
                f"chmod 600 {path}"
            )
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{variable}: {path} cannot be read: {type(exc).__name__}") from None
    try:
        return parse_key(text, f"{variable} ({path})")
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def load_cipher(settings: SecretsSettings) -> SecretCipher | None:
    """The store's cipher: the current key and the previous one; None without a key.

    Raises:
        SettingsError: a key file that is missing, readable by others, or not a key.
    """
    current = _key(settings.key, settings.key_file, "key")
    if current is None:
        return None
    previous = _key(settings.previous_key, settings.previous_key_file, "previous_key")
    return SecretCipher(current, [previous] if previous is not None else [])


def secret_store(settings: Settings, mongodb_url: str | None) -> SecretStore:
    """MongoDB's ``secrets`` collection when the entities are there, else
    ``<data_dir>/secrets.enc``."""
    if mongodb_url:
        from eventray.pipeline.adapters.mongo_secrets import MongoSecretStore

        return MongoSecretStore(url=mongodb_url)
    from eventray.pipeline.adapters.secrets_enc import FileSecretStore

    return FileSecretStore(path=settings.secret_store_path)


def layered_secrets(
    settings: Settings, mongodb_url: str | None, *, strict: bool = False
) -> LayeredSecrets:
    """What a lane renders: the store (when a key is given), the file, the environment."""
    from eventray.pipeline.adapters.secrets_file import FileSecrets

    interval = settings.secrets.check_interval_s
    layers: list[TableSource] = []
    cipher = load_cipher(settings.secrets)
    if cipher is not None:
        store = secret_store(settings, mongodb_url)
        layers.append(StoredSecrets(store, cipher, check_every_s=interval, strict=strict))
    layers.append(FileSecrets(settings.secrets_path, check_every_s=interval))
    layers.append(EnvSecrets())
    return LayeredSecrets(layers, check_every_s=interval)


def check_secrets(settings: Settings) -> None:
    """What the lanes would refuse stops ``eventray up`` before anything starts, with the path
    or setting and the fix: a secrets file others may read or a malformed one, a key file that
    is not a key, a store with entries that do not open under the configured keys, or a store
    holding secrets while no key is given.

    Raises:
        ConfigError, SettingsError, PermanentError: as above.
    """
    from eventray.pipeline.adapters.secrets_file import FileSecrets

    FileSecrets(settings.secrets_path)
    EnvSecrets()  # logs the variables it ignores
    cipher = load_cipher(settings.secrets)
    if cipher is not None:
        store = secret_store(settings, settings.mongodb_url)
        try:
            StoredSecrets(store, cipher, background=False, strict=True)
        finally:
            store.close()
        return
    store = secret_store(settings, settings.mongodb_url)
    try:
        held = len(store.all())
    finally:
        store.close()
    if held:
        raise PermanentError(
            f"the secret store holds {held} secret(s) but no key is given: set "
            "EVENTRAY_SECRETS__KEY or EVENTRAY_SECRETS__KEY_FILE to the key they were "
            "sealed with"
        )
