// One line of a transcript list (the chat's and the voice call's): who said it and what. Returns
// the text element, which a streamed answer keeps extending.

export function appendLine(list, kind, who, text) {
  const item = document.createElement("li");
  item.className = kind;
  if (who) {
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = `${who}:`;
    item.append(label);
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(body);
  list.append(item);
  list.scrollTop = list.scrollHeight;
  return body;
}
