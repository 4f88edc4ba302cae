// Asks before a form marked with data-confirm is sent (e.g. delete buttons). A file rather than inline
// handlers, so the pages keep a Content-Security-Policy without 'unsafe-inline'.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
}());
