// Starts Swagger UI on the API docs page (webapp/templates/swagger_ui.html). A file rather than flask-smorest's
// inline script, so the page keeps a Content-Security-Policy without 'unsafe-inline'.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui-container");
  var config = { url: root.dataset.specUrl, dom_id: "#swagger-ui-container", validatorUrl: null };
  var overrides = JSON.parse(root.dataset.config || "{}");
  Object.keys(overrides).forEach(function (name) { config[name] = overrides[name]; });
  window.ui = window.SwaggerUIBundle(config);
}());
