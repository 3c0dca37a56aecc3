"""The contact list's order indexes: (workspace, <column> DESC NULLS LAST)."""

from django.db import models


class LatestFirstIndex(models.Index):
    """(workspace, column DESC NULLS LAST): the order of the contact list, where a
    contact with no interaction comes last, so a page is read straight off the index.

    SQLite cannot write NULLS LAST in an index, but sorts NULLs last in DESC order
    anyway: there it is a plain DESC index."""

    def __init__(self, *, column, name):
        self.column = column
        super().__init__("workspace", models.F(column).desc(nulls_last=True), name=name)

    def deconstruct(self):
        path, _, _ = super().deconstruct()
        return path, (), {"column": self.column, "name": self.name}

    def clone(self):
        return self.__class__(column=self.column, name=self.name)

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "postgresql":
            plain = models.Index(fields=["workspace", f"-{self.column}"], name=self.name)
            return plain.create_sql(model, schema_editor, using=using, **kwargs)
        return super().create_sql(model, schema_editor, using=using, **kwargs)
