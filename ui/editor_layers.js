// The correction editor names each layer after its organ and paints in the active organ's colour.
//
// Gradio 6.31's ImageEditor names every layer it loads from Python "Layer 1", so after a slice is
// loaded its layer picker no longer says which organ a layer is, and its brush keeps whatever colour
// was last picked. Every editor on the page registers itself as `window.editor` when it mounts; this
// script (put in the page's <head> by ui/editor.py, which fills in ORGANS) catches each one, renames
// its layers in ORGANS order (the order ui/editor.py sends and reads them in) and, whenever the active
// layer changes, sets the brush to that organ's colour. The masks are read by the layer, never by the
// colour (ui/editor.py), so this changes what a person sees, not what an edit does.
(() => {
  const ORGANS = __ORGANS__;  // [{name, colour}], model.labels order
  const watched = new WeakSet();
  let latest;

  function watch(editor) {
    if (!editor.layer_manager || !editor.tools) {  // the editor is still being built
      setTimeout(() => watch(editor), 50);
      return;
    }
    const store = editor.layer_manager.layer_store;
    let coloured = null;
    store.subscribe(({active_layer, layers}) => {
      if (layers.length !== ORGANS.length) return;  // mid-load: old layers going, new ones coming
      let renamed = false;
      layers.forEach((layer, i) => {
        if (layer.name !== ORGANS[i].name) {
          layer.name = ORGANS[i].name;
          renamed = true;
        }
      });
      const active = layers.findIndex((layer) => layer.id === active_layer);
      const brush = editor.tools.get("brush");
      if (active >= 0 && brush && active_layer !== coloured) {
        coloured = active_layer;
        brush.set_brush_color(ORGANS[active].colour);
      }
      if (renamed) store.update((state) => ({...state}));  // redraw the picker with the names
    });
  }

  function register(editor) {
    latest = editor;
    if (editor && !watched.has(editor)) {
      watched.add(editor);
      watch(editor);
    }
  }

  const mounted = window.editor;  // an embedded app (<gradio-app>) may run this after an editor mounted
  Object.defineProperty(window, "editor", {configurable: true, get: () => latest, set: register});
  register(mounted);
})();
