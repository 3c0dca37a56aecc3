"""The contact list's order indexes: (workspace, <column> DESC NULLS LAST[, id DESC])."""

from django.db import models


class LatestFirstIndex(models.Index):
    """(workspace, column DESC NULLS LAST): the order of the contact list, where a
    contact with no interaction comes last, so a page is read straight off the index.

    With tie_break (a column, "id"), ties are ordered by it, descending, as the pages
    order them ("-pk"): many contacts share a last interaction day or a closeness_log
    (same days, same log), and without it a page sorts every tied row first.

    SQLite cannot write NULLS LAST in an index, but sorts NULLs last in DESC order
    anyway: there it is a plain DESC index."""

    def __init__(self, *, column, name, tie_break=None):
        self.column = column
        self.tie_break = tie_break
        order = [models.F(column).desc(nulls_last=True)]
        if tie_break:
            order.append(models.F(tie_break).desc())
        super().__init__("workspace", *order, name=name)

    def deconstruct(self):
        path, _, _ = super().deconstruct()
        kwargs = {"column": self.column, "name": self.name}
        if self.tie_break:
            kwargs["tie_break"] = self.tie_break
        return path, (), kwargs

    def clone(self):
        return self.__class__(column=self.column, name=self.name, tie_break=self.tie_break)

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "postgresql":
            fields = ["workspace", f"-{self.column}"] + ([f"-{self.tie_break}"] if self.tie_break else [])
            plain = models.Index(fields=fields, name=self.name)
            return plain.create_sql(model, schema_editor, using=using, **kwargs)
        return super().create_sql(model, schema_editor, using=using, **kwargs)
