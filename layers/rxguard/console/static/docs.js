// Swagger UI over the repository's openapi.json, from files shipped with the package.
window.addEventListener("DOMContentLoaded", function () {
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({ url: el.dataset.spec, dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null });
});
