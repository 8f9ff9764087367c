// Copy buttons (data-copy: the id of what to copy), on the admin's and the portal's new-key pages.
// The clipboard API exists only in secure contexts (HTTPS, localhost): elsewhere the text is
// selected for the person to copy.
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  button.addEventListener("click", function () {
    var target = document.getElementById(button.dataset.copy);
    var text = target.value !== undefined ? target.value : target.textContent;
    function select() {
      if (target.select) {
        target.select();
      } else {
        var range = document.createRange();
        range.selectNodeContents(target);
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
      }
      button.textContent = button.dataset.selected;
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { button.textContent = button.dataset.copied; }, select);
    } else {
      select();
    }
  });
});
