// Stylesheets are bundled by esbuild (main.tsx imports ui/styles.css); they export nothing.
declare module "*.css";
