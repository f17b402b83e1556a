"""GET /: one page to try the server: a text, a voice, a format; pcm plays as it streams."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bark-onnx</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
  textarea { width: 100%; min-height: 6rem; font: inherit; }
  label { display: inline-block; margin: .5rem 1rem .5rem 0; }
  button { font: inherit; padding: .3rem 1.2rem; }
  #status { margin-top: 1rem; color: #444; }
  #error { color: #a00; }
</style>
</head>
<body>
<h1>bark-onnx</h1>
<textarea id="text" placeholder="Hello, my name is Suno. [laughs]"></textarea>
<div>
  <label>voice <select id="voice"><option value="">(none)</option></select></label>
  <label>format <select id="format">
    <option value="pcm">pcm (plays as it streams)</option>
    <option value="wav">wav</option><option value="mp3">mp3</option>
    <option value="opus">opus</option><option value="flac">flac</option>
  </select></label>
  <label>seed <input id="seed" type="number" min="0" style="width: 6rem"></label>
  <label>API key <input id="key" type="password" autocomplete="off" style="width: 10rem"></label>
</div>
<button id="speak">Speak</button>
<div id="status">samples received: <span id="samples">0</span> · <span id="state">idle</span></div>
<div id="error"></div>
<audio id="player" controls hidden></audio>
<script>
const $ = (id) => document.getElementById(id);
const RATE = 24000;
let audio = null;

function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}

async function errorText(resp) {
  try { return (await resp.json()).error.message; } catch (e) { return resp.status + " " + resp.statusText; }
}

async function loadVoices() {
  const resp = await fetch("/v1/audio/voices", {headers: headers()});
  if (!resp.ok) { $("error").textContent = "voices: " + await errorText(resp); return; }
  $("error").textContent = "";
  const select = $("voice");
  select.length = 1;
  for (const name of (await resp.json()).voices) select.add(new Option(name, name));
}

function play(samples) {  // schedule a chunk right after the previous one
  try {
    if (!audio) { audio = new AudioContext({sampleRate: RATE}); audio.next = audio.currentTime + 0.05; }
    const buffer = audio.createBuffer(1, samples.length, RATE);
    buffer.copyToChannel(samples, 0);
    const source = audio.createBufferSource();
    source.buffer = buffer;
    source.connect(audio.destination);
    audio.next = Math.max(audio.next, audio.currentTime);
    source.start(audio.next);
    audio.next += samples.length / RATE;
  } catch (e) { console.warn("no audio output:", e); }
}

async function speak() {
  const format = $("format").value;
  const body = {model: "bark", input: $("text").value, response_format: format};
  if ($("voice").value) body.voice = $("voice").value;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  $("samples").textContent = "0"; $("error").textContent = ""; $("state").textContent = "waiting";
  $("speak").disabled = true;
  try {
    const resp = await fetch("/v1/audio/speech", {method: "POST", headers: headers(), body: JSON.stringify(body)});
    if (!resp.ok) { $("error").textContent = await errorText(resp); $("state").textContent = "failed"; return; }
    if (format !== "pcm") {
      const blob = await resp.blob();
      $("samples").textContent = blob.size + " bytes";
      $("player").src = URL.createObjectURL(blob); $("player").hidden = false; $("player").play().catch(() => {});
      $("state").textContent = "done";
      return;
    }
    const reader = resp.body.getReader();
    let count = 0, odd = null;
    $("state").textContent = "streaming";
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      let bytes = value;
      if (odd !== null) { bytes = new Uint8Array(value.length + 1); bytes[0] = odd; bytes.set(value, 1); odd = null; }
      if (bytes.length % 2) { odd = bytes[bytes.length - 1]; bytes = bytes.subarray(0, bytes.length - 1); }
      const pcm = new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      const samples = Float32Array.from(pcm, (x) => x / 32768);
      count += samples.length;
      $("samples").textContent = String(count);
      play(samples);
    }
    $("state").textContent = "done";
  } catch (e) {
    $("error").textContent = String(e); $("state").textContent = "failed";
  } finally {
    $("speak").disabled = false;
  }
}

$("speak").addEventListener("click", speak);
$("key").addEventListener("change", loadVoices);
loadVoices();
</script>
</body>
</html>
"""
