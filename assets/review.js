() => {
  // DiffVQA review app: reading-room dark theme, keyboard shortcuts, and no review lost by accident.
  //   Alt+1 / Alt+2 / Alt+3  verdict agree / partly / disagree
  //   Alt+S                  save the review
  //   Alt+A                  analyse
  //   Enter in the lambda box applies the typed value (the slider's number box otherwise waits for blur)
  // Leaving or reloading the page with an unsaved review (a verdict, rating, correction or comment entered
  // since the last save) asks first; the app's Save handler calls window.diffvqaReview.saved().
  document.body.classList.add("dark");
  const FORM = "#verdict, #mask-rating, #corrected, #comment";
  const review = {
    edited: false,
    saved() { review.edited = false; },
    hasContent() {
      const checked = document.querySelector("#verdict input:checked, #mask-rating input:checked");
      const texts = [...document.querySelectorAll("#corrected textarea, #comment textarea")];
      return Boolean(checked) || texts.some((box) => box.value.trim() !== "");
    },
    unsaved() { return review.edited && review.hasContent(); },
  };
  window.diffvqaReview = review;
  const markEdited = (event) => {
    if (event.target instanceof Element && event.target.closest(FORM)) { review.edited = true; }
  };
  document.addEventListener("input", markEdited, true);
  document.addEventListener("change", markEdited, true);
  window.addEventListener("beforeunload", (event) => {
    if (review.unsaved()) { event.preventDefault(); event.returnValue = ""; }
  });

  const clickRadio = (index) => {
    const radios = document.querySelectorAll("#verdict input[type=radio]");
    if (radios[index]) { radios[index].click(); radios[index].focus(); }
  };
  const clickButton = (id) => {
    const button = document.querySelector(`#${id}`);
    if (button && !button.disabled) { button.click(); }
  };
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target instanceof Element && event.target.matches("#lambda input[type=number]")) {
      event.target.blur();  // the slider applies a typed value when its number box loses focus
      event.preventDefault();
      return;
    }
    if (!event.altKey || event.ctrlKey || event.metaKey) { return; }
    const digit = { Digit1: 0, Digit2: 1, Digit3: 2, Numpad1: 0, Numpad2: 1, Numpad3: 2 }[event.code];
    if (digit !== undefined) { clickRadio(digit); event.preventDefault(); return; }
    if (event.code === "KeyS") { clickButton("save-review"); event.preventDefault(); return; }
    if (event.code === "KeyA") { clickButton("analyze"); event.preventDefault(); }
  });
}
