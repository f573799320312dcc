"""A settings form generated from one of the config dataclasses (lmstudio.config).

Every field becomes a row: its help text as the label, an editor chosen from the field's type and
metadata (check box for bools, combo box for ``choices``, a line edit otherwise) and a red label that
shows why the value is rejected. No form is written by hand, so a new config field appears in the app
by itself. Fields whose ``only`` metadata excludes the current architecture are hidden.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QWidget

from lmstudio import config


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


class ConfigForm(QWidget):
    """Edits one config section (``"model"``, ``"train"``, ...). ``changed`` fires on every edit."""

    changed = Signal()

    def __init__(self, section: str, exclude: tuple[str, ...] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self.section = section
        self.cls = config.SECTIONS[section]
        self._specs = {f.name: f for f in dataclasses.fields(self.cls) if f.name not in exclude}
        self._editors: dict[str, QWidget] = {}
        self._errors: dict[str, QLabel] = {}
        self._rows: dict[str, tuple[QLabel, QWidget]] = {}
        self._arch: str | None = None
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        for name, spec in self._specs.items():
            editor = self._make_editor(spec)
            editor.setObjectName(f"{section}.{name}")
            error = QLabel()
            error.setObjectName("fieldError")
            error.setWordWrap(True)
            error.hide()
            holder = QWidget()
            row = QHBoxLayout(holder)
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(editor, 1)
            row.addWidget(error, 1)
            label = QLabel(spec.metadata.get("help", name))
            label.setToolTip(f"{section}.{name}")
            editor.setToolTip(f"{section}.{name}: {spec.metadata.get('help', '')}")
            layout.addRow(label, holder)
            self._editors[name], self._errors[name], self._rows[name] = editor, error, (label, holder)
        self.set_values(self.cls())

    def _make_editor(self, spec: dataclasses.Field) -> QWidget:
        kind = config.field_type(spec)
        if kind is bool:
            box = QCheckBox()
            box.toggled.connect(self.changed)
            return box
        choices = spec.metadata.get("choices")
        if choices:
            combo = QComboBox()
            combo.addItems(list(choices))
            combo.currentIndexChanged.connect(self.changed)
            return combo
        edit = QLineEdit()
        edit.textEdited.connect(self.changed)
        return edit

    # ---- values -----------------------------------------------------------------------------
    def editor(self, name: str) -> QWidget:
        return self._editors[name]

    def field_names(self) -> list[str]:
        return list(self._editors)

    def set_values(self, obj: Any) -> None:
        """Show a dataclass instance of this section (signals blocked: no ``changed`` storm)."""
        for name, editor in self._editors.items():
            value = getattr(obj, name)
            editor.blockSignals(True)
            if isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, QComboBox):
                i = editor.findText(str(value))
                editor.setCurrentIndex(max(i, 0))
            else:
                editor.setText(format_value(value))
            editor.blockSignals(False)
        self.show_errors({})

    def raw_values(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Parsed values by field name, and the fields whose text cannot be parsed (dotted -> reason)."""
        values, errors = {}, {}
        for name, editor in self._editors.items():
            spec = self._specs[name]
            if isinstance(editor, QCheckBox):
                values[name] = editor.isChecked()
            elif isinstance(editor, QComboBox):
                values[name] = editor.currentText()
            else:
                try:
                    values[name] = config.parse_value(spec, editor.text())
                except ValueError as e:
                    errors[f"{self.section}.{name}"] = str(e)
        return values, errors

    def apply_to(self, obj: Any) -> tuple[Any, dict[str, str]]:
        """A copy of ``obj`` with the form's parsable values; the unparsable ones keep ``obj``'s value."""
        values, errors = self.raw_values()
        return dataclasses.replace(obj, **values), errors

    # ---- feedback ---------------------------------------------------------------------------
    def show_errors(self, errors: dict[str, str]) -> None:
        """Show the reasons for this section's dotted keys next to their fields; clear the rest."""
        prefix = self.section + "."
        for name, label in self._errors.items():
            msg = errors.get(prefix + name)
            label.setText(msg or "")
            label.setVisible(bool(msg))
            self._editors[name].setProperty("invalid", bool(msg))
            self._editors[name].style().unpolish(self._editors[name])
            self._editors[name].style().polish(self._editors[name])

    def error_text(self, name: str) -> str:
        return self._errors[name].text() if not self._errors[name].isHidden() else ""

    def set_arch(self, arch: str) -> None:
        """Hide the fields that do not apply to ``arch`` (metadata ``only``)."""
        self._arch = arch
        layout: QFormLayout = self.layout()  # type: ignore[assignment]
        for name, spec in self._specs.items():
            only = spec.metadata.get("only")
            layout.setRowVisible(self._rows[name][1], not only or arch in only)

    def is_field_visible(self, name: str) -> bool:
        spec = self._specs[name]
        only = spec.metadata.get("only")
        return not only or self._arch is None or self._arch in only
