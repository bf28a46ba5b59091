// Progressive enhancement only: without this script every page works, and the password field
// stays a password field. With it, a button beside the field shows or hides the password.
(function () {
  "use strict";
  document.querySelectorAll("input[type=password][data-show]").forEach(function (input) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "toggle";
    button.textContent = input.dataset.show;
    button.setAttribute("aria-controls", input.id);
    button.addEventListener("click", function () {
      var shown = input.type === "text";
      input.type = shown ? "password" : "text";
      button.textContent = shown ? input.dataset.show : input.dataset.hide;
    });
    input.form.addEventListener("submit", function () { input.type = "password"; });
    input.parentNode.appendChild(button);
  });
})();
