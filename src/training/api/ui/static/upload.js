// Data sets: a CSV dropped on the page (or chosen) is sent as POST /ui/datasets takes it.
(function () {
  "use strict";
  var drop = document.getElementById("drop");
  if (!drop) return;
  var input = document.getElementById("file");
  var status = document.getElementById("upload-status");

  function say(text, failed) {
    status.textContent = text;
    status.className = failed ? "error" : "";
  }

  function send(file) {
    if (!file) return;
    say("Uploading " + file.name + " (" + file.size + " bytes) ...", false);
    fetch(drop.dataset.upload, {
      method: "POST",
      body: file,
      credentials: "same-origin",
      headers: {"Content-Type": "text/csv", "X-CSRF-Token": document.body.dataset.csrf},
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (!response.ok) throw new Error(answer.error || ("HTTP " + response.status));
        return answer;
      });
    }).then(function (answer) {
      say("Stored as " + answer.dataset_id + ": " + answer.rows + " rows, " +
          answer.columns.length + " columns. Reloading ...", false);
      window.location.reload();
    }).catch(function (error) {
      say("Upload refused: " + error.message, true);
    });
  }

  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (event) {
      event.preventDefault();
      drop.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    send(event.dataTransfer.files[0]);
  });
  input.addEventListener("change", function () { send(input.files[0]); });
})();
