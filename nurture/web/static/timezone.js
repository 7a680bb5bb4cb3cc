// Sends the reader's time zone with the signup form, so emails arrive at a sensible
// local hour. Without JavaScript the form still works: the list's default zone is used.
(function () {
  var field = document.querySelector('.nurture-form input[name="timezone"]');
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (field && !field.value && zone && zone !== "Etc/Unknown") field.value = zone;
  } catch (e) {}
})();
