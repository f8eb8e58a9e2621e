() => {
  // DiffVQA review app: reading-room dark theme and keyboard shortcuts for the review panel.
  //   Alt+1 / Alt+2 / Alt+3  verdict agree / partly / disagree
  //   Alt+S                  save the review
  //   Alt+A                  analyse
  document.body.classList.add("dark");
  const clickRadio = (index) => {
    const radios = document.querySelectorAll("#verdict input[type=radio]");
    if (radios[index]) { radios[index].click(); radios[index].focus(); }
  };
  const clickButton = (id) => {
    const button = document.querySelector(`#${id}`);
    if (button) { button.click(); }
  };
  document.addEventListener("keydown", (event) => {
    if (!event.altKey || event.ctrlKey || event.metaKey) { return; }
    const digit = { Digit1: 0, Digit2: 1, Digit3: 2, Numpad1: 0, Numpad2: 1, Numpad3: 2 }[event.code];
    if (digit !== undefined) { clickRadio(digit); event.preventDefault(); return; }
    if (event.code === "KeyS") { clickButton("save-review"); event.preventDefault(); return; }
    if (event.code === "KeyA") { clickButton("analyze"); event.preventDefault(); }
  });
}
