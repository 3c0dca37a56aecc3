// Copy buttons on the Segment & API keys page: <button class="copy-button"
// data-copy-from="ID"> copies the value of the field with that id. No inline script,
// so the page works under a strict Content-Security-Policy.
(function () {
  "use strict";

  function fallbackCopy(field) {
    field.focus();
    field.select();
    try {
      return document.execCommand("copy");
    } catch (error) {
      return false;
    }
  }

  function copy(field) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(field.value).then(
        function () { return true; },
        function () { return fallbackCopy(field); }
      );
    }
    return Promise.resolve(fallbackCopy(field));
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest(".copy-button");
    if (!button) {
      return;
    }
    var field = document.getElementById(button.dataset.copyFrom);
    var status = button.parentElement.querySelector(".copy-status");
    if (!field) {
      return;
    }
    copy(field).then(function (copied) {
      if (status) {
        status.textContent = copied ? "Copied" : "Select the text and copy it";
      }
      button.classList.toggle("copied", copied);
    });
  });
})();
