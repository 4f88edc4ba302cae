"""What the admin pages share to read forms and show lists: a form loaded through a schema, pages of a list."""

import marshmallow as ma
from flask import flash, redirect, render_template, request

from webapp.common.pagination import fetch_page
from webapp.errors import APIError

PAGE_SIZE = 50


def page_number() -> int:
    """The ``page`` query parameter (1 when missing or not a number)."""
    try:
        return max(int(request.args.get("page", 1)), 1)
    except ValueError:
        return 1


def paged(stmt):
    """One page of ``stmt`` with what the pager template needs."""
    page = page_number()
    items, total = fetch_page(stmt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return items, {"page": page, "total": total, "pages": max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)}


def load_form(schema: ma.Schema):
    """(values, errors) of the posted form through a schema. An emptied field is null where the field allows it
    (so editing can clear it) and absent otherwise."""
    data = {}
    for name, value in request.form.items():
        field = schema.fields.get(name)
        if name == "csrf_token" or (value == "" and not (field and field.allow_none)):
            continue
        data[name] = None if value == "" else value
    try:
        return schema.load(data), {}
    except ma.ValidationError as exc:
        return None, exc.messages


def form_page(template: str, schema: ma.Schema, save, **context):
    """Render ``template``; on POST load the form through ``schema`` and call ``save(values)``, which returns
    where to go next. Invalid input, or a service's refusal (e.g. a taken name), is shown on the form (422)."""
    errors = {}
    if request.method == "POST":
        values, errors = load_form(schema)
        if not errors:
            try:
                target = save(values)
                flash("Saved.")
                return redirect(target)
            except APIError as exc:
                errors = exc.errors or {"_": [exc.description]}
    return render_template(template, form=request.form, errors=errors, **context), 422 if errors else 200


def flash_errors(errors: dict) -> None:
    """Show each field's messages on the next page (for forms posted from a page that redirects back)."""
    for field, messages in errors.items():
        flash(f"{field}: {' '.join(map(str, messages))}", "error")
